"""dead-letters resource."""
