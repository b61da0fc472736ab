"""Security: tokens, API keys, roles, workspace isolation, secrets, rate limits, headers, OpenAPI."""
