"""Who is calling: Bearer access tokens (and, later, API keys), resolved to a workspace principal."""

from __future__ import annotations

from functools import wraps

from flask import current_app, g, request
from flask_smorest import Blueprint

from hub.api.errors import ApiError
from hub.services.auth import Principal, principal_from_token

SECURITY = [{"bearerAuth": []}]
SECURITY_SCHEMES = {
    "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
}


def current_principal() -> Principal:
    header = request.headers.get("Authorization", "")
    workspace = request.headers.get("X-Workspace-Id")
    workspace_id = int(workspace) if workspace and workspace.isdigit() else None
    if header.lower().startswith("bearer "):
        settings = current_app.extensions["hookhub"].settings
        return principal_from_token(header[7:].strip(), settings, workspace_id)
    raise ApiError(401, "unauthorized", "authentication required: send Authorization: Bearer <access_token>",
                   headers={"WWW-Authenticate": 'Bearer realm="hookhub"'})


def auth_required(role: str = "viewer"):
    """Require a caller with at least ``role`` in the current workspace; documents the security scheme."""

    def decorator(fn):
        @wraps(fn)
        def wrapper(*args, **kwargs):
            principal = current_principal()
            if not principal.can(role):
                raise ApiError(403, "forbidden", f"this needs the {role} role in the workspace")
            g.principal = principal
            return fn(*args, **kwargs)

        return Blueprint.doc(security=SECURITY)(wrapper)

    return decorator
