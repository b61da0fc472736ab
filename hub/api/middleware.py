"""Cross-cutting HTTP concerns: request ids, an access log line, security headers and CORS.

- Every response carries ``X-Request-Id`` (an incoming one is honoured when it is a sane token), and
  every log record written while serving a request has a ``request_id`` attribute.
- Security headers on every response; API answers are never cached.
- CORS only for the origins in ``HOOKHUB_CORS_ORIGINS`` (comma-separated, or ``*``); none by default.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid

from flask import Flask, g, has_request_context, request
from flask_cors import CORS

from hub.api.errors import ApiError
from hub.config import ConfigError

access_log = logging.getLogger("hookhub.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_CSP_API = "default-src 'none'; frame-ancestors 'none'"
# The docs and the UI load their own scripts and styles (served locally) and Swagger UI inlines some.
_CSP_PAGES = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
              "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'")
_installed_factory = False


def _install_record_factory() -> None:
    """Give every log record a ``request_id`` (``-`` outside requests), so formats may use it."""
    global _installed_factory
    if _installed_factory:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        if not hasattr(record, "request_id"):
            record.request_id = g.get("request_id", "-") if has_request_context() else "-"
        return record

    logging.setLogRecordFactory(factory)
    _installed_factory = True


def cors_origins(app: Flask) -> list[str]:
    raw = app.config.get("HOOKHUB_CORS_ORIGINS")
    if raw is None:
        raw = os.environ.get("HOOKHUB_CORS_ORIGINS", "")
    origins = [o.strip().rstrip("/") for o in raw.split(",") if o.strip()]
    for origin in origins:
        if origin != "*" and not re.match(r"^https?://[^/\s]+$", origin):
            raise ConfigError(f"HOOKHUB_CORS_ORIGINS: {origin!r} is not an origin like https://app.example.com")
    return origins


def init_middleware(app: Flask) -> None:
    _install_record_factory()

    @app.before_request
    def _request_id():
        incoming = request.headers.get("X-Request-Id", "")
        g.request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        g.request_started = time.monotonic()

    @app.before_request
    def _ids_in_range():
        # An id no database column can hold names nothing: 404 here, not an overflow error in the driver.
        for name, value in (request.view_args or {}).items():
            if isinstance(value, int) and not 0 <= value < 2**63:
                raise ApiError(404, "not_found", f"no object with {name} {value}")

    @app.after_request
    def _headers(response):
        response.headers["X-Request-Id"] = g.get("request_id") or uuid.uuid4().hex
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        page = request.path.startswith(("/docs", "/ui"))
        response.headers.setdefault("Content-Security-Policy", _CSP_PAGES if page else _CSP_API)
        if request.is_secure:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
        if request.path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")
        started = g.get("request_started")
        access_log.info("%s %s %s %.1fms", request.method, request.path, response.status_code,
                        (time.monotonic() - started) * 1000 if started else -1.0)
        return response

    origins = cors_origins(app)
    if origins:
        CORS(app, resources={r"/api/*": {"origins": origins}},
             allow_headers=["Authorization", "X-API-Key", "X-Workspace-Id", "X-Request-Id", "Content-Type",
                            "Last-Event-ID", "Idempotency-Key"],
             expose_headers=["X-Request-Id", "Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining",
                             "X-RateLimit-Reset", "Location"],
             max_age=600)
