"""Users (hub administration) resource."""
