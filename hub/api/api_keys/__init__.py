"""API keys resource."""
