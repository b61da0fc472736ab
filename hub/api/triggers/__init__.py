"""triggers resource."""
