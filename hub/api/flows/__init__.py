"""flows resource."""
