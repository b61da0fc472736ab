"""Rate limits (flask-limiter): every /api/ route per client, failed logins per client and account.

Counters live in Redis when ``HOOKHUB_REDIS_URL`` is set (shared by every API process), otherwise in
memory (the embedded single process). Inbound webhooks (``/hooks/…``), health, metrics and the docs are
not limited here: webhooks get their own per-trigger limit.

Settings (env, or the same keys in ``create_app(test_config=…)``):
``HOOKHUB_RATE_LIMIT_API`` (default ``1200 per minute``), ``HOOKHUB_RATE_LIMIT_LOGIN``
(default ``10 per minute``: failed logins per client address and email), ``HOOKHUB_RATE_LIMIT_REGISTER``
(default ``20 per hour`` per client address).
"""

from __future__ import annotations

import os

import jwt
from flask import Flask, current_app, request
from flask_limiter import Limiter
from limits import parse_many

from hub.config import ConfigError
from hub.crypto import sha256_hex

DEFAULTS = {
    "HOOKHUB_RATE_LIMIT_API": "1200 per minute",
    "HOOKHUB_RATE_LIMIT_LOGIN": "10 per minute",
    "HOOKHUB_RATE_LIMIT_REGISTER": "20 per hour",
}
#: endpoint → (setting, key function name, count only failures)
_ROUTE_LIMITS = {
    "auth.Login": ("HOOKHUB_RATE_LIMIT_LOGIN", "login", True),
    "auth.Register": ("HOOKHUB_RATE_LIMIT_REGISTER", "address", False),
    "auth.Refresh": ("HOOKHUB_RATE_LIMIT_LOGIN", "address", True),
}


def setting(app: Flask, name: str) -> str:
    value = app.config.get(name) or os.environ.get(name) or DEFAULTS[name]
    try:
        parse_many(value)
    except ValueError:
        raise ConfigError(f"{name}: not a rate limit like '100 per minute': {value!r}") from None
    return value


def _address() -> str:
    return "ip:" + (request.remote_addr or "unknown")


def _login_key() -> str:
    body = request.get_json(silent=True)
    email = body.get("email") if isinstance(body, dict) else None
    account = sha256_hex(email.strip().lower())[:16] if isinstance(email, str) else "-"
    return f"{_address()}:login:{account}"


def _client_key() -> str:
    """A user's verified token counts for the user (many users may share one address); else the address."""
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        try:
            claims = jwt.decode(header[7:].strip(), current_app.extensions["hookhub"].settings.secret_key,
                                algorithms=["HS256"], options={"verify_exp": False})
            return f"user:{claims.get('sub')}"
        except jwt.InvalidTokenError:
            pass
    return _address()


def init_rate_limits(app: Flask) -> Limiter:
    settings = app.extensions["hookhub"].settings
    storage = settings.redis_url or "memory://"
    limiter = Limiter(
        key_func=_client_key,
        app=app,
        default_limits=[setting(app, "HOOKHUB_RATE_LIMIT_API")],
        storage_uri=storage,
        # Hubs sharing one Redis must not share counters; the processes of one hub share the key.
        key_prefix="hookhub:" + sha256_hex(settings.secret_key)[:12],
        headers_enabled=True,
        # A Redis outage must not take the API down with it: fall back to per-process counters.
        swallow_errors=True,
        in_memory_fallback_enabled=True,
        enabled=app.config.get("RATELIMIT_ENABLED", True),
    )

    @limiter.request_filter
    def _only_api() -> bool:
        return not request.path.startswith("/api/")

    keys = {"login": _login_key, "address": _address}
    for endpoint, (name, key, failures_only) in _ROUTE_LIMITS.items():
        view = app.view_functions.get(endpoint)
        if view is None:
            continue
        deduct = (lambda response: response.status_code == 401) if failures_only else None
        app.view_functions[endpoint] = limiter.limit(setting(app, name), key_func=keys[key],
                                                     deduct_when=deduct)(view)
    app.extensions["hookhub_limiter"] = limiter
    return limiter
