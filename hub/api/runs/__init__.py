"""runs resource."""
