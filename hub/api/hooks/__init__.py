"""hooks resource."""
