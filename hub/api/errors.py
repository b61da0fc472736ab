"""One error shape for the whole API (problem+json style): ``{status, code, message, errors?}``.

``code`` is stable and meant for programs; ``message`` names what was wrong; ``errors`` maps input
paths to messages where input was wrong. Nothing a client sends may produce a 500.
"""

from __future__ import annotations

import logging
from typing import Any

import peewee
from flask import Flask, jsonify
from marshmallow import Schema, fields
from playhouse.pool import MaxConnectionsExceeded
from werkzeug.exceptions import HTTPException

log = logging.getLogger("hookhub.api")

PROBLEM_MIMETYPE = "application/problem+json"

_DEFAULT_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
}


class ApiError(Exception):
    """Raise from a view or service to answer with a 4xx problem document."""

    def __init__(self, status: int, code: str, message: str, errors: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors
        self.headers = headers or {}


class ProblemSchema(Schema):
    status = fields.Integer(metadata={"example": 422})
    code = fields.String(metadata={"example": "validation_error"})
    message = fields.String(metadata={"example": "the request body is invalid"})
    errors = fields.Raw(metadata={"description": "per-field messages, keyed by path"})


def problem(status: int, code: str, message: str, errors: Any = None, headers=None):
    body: dict[str, Any] = {"status": status, "code": code, "message": message}
    if errors:
        body["errors"] = errors
    response = jsonify(body)
    response.status_code = status
    response.mimetype = PROBLEM_MIMETYPE
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def _flatten(messages: Any, prefix: str = "") -> dict[str, Any]:
    """flask-smorest nests errors by location ({"json": {"name": [...]}}); flatten to paths."""
    if not isinstance(messages, dict):
        return {prefix or "body": messages}
    out: dict[str, Any] = {}
    for key, value in messages.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(_flatten(value, path))
        else:
            out[path] = value
    return out


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return problem(exc.status, exc.code, exc.message, exc.errors, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        data = getattr(exc, "data", None) or {}
        messages = data.get("messages")
        if status == 422 and messages:
            errors = {}
            for location, msgs in messages.items():
                errors.update(_flatten(msgs, "" if location in ("json", "query", "form") else location))
            return problem(422, "validation_error", "the request is invalid: " + ", ".join(
                sorted(errors)), errors)
        message = data.get("message") or exc.description or exc.name
        return problem(status, _DEFAULT_CODES.get(status, "error"), message)

    @app.errorhandler(peewee.OperationalError)
    @app.errorhandler(MaxConnectionsExceeded)
    def _database_unavailable(exc: Exception):
        # Out of connections, or the database is down or locked: nothing was committed, and the
        # client should come back (webhook senders retry on 5xx). Not the client's fault, not a bug.
        log.warning("database unavailable: %s", str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
        return problem(503, "database_unavailable", "the database is unavailable or at its connection limit; "
                       "nothing was stored, try again", headers={"Retry-After": "1"})

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return problem(500, "internal_error", "internal error; the server log has the details")
