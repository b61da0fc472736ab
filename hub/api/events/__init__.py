"""Live run events (SSE), /metrics and the built-in run viewer (/ui)."""
