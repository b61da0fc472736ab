"""Who is calling: Bearer access tokens or API keys, resolved to a workspace principal."""

from __future__ import annotations

from functools import wraps

from flask import current_app, g, request
from flask_smorest import Blueprint

from hub.api.errors import ApiError
from hub.services.auth import Principal, principal_from_api_key, principal_from_token

SECURITY = [{"bearerAuth": []}, {"apiKeyAuth": []}]
SECURITY_SCHEMES = {
    "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                   "description": "An access token from `POST /api/v1/auth/login` (short-lived; refresh it)."},
    "apiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                   "description": "An API key from `POST /api/v1/api-keys`, bound to one workspace; "
                                  "scopes read/write/admin act as the viewer/editor/admin roles."},
}
#: documented on every authenticated operation; `X-Workspace-Id` picks the workspace a token acts in
WORKSPACE_HEADER = {
    "name": "X-Workspace-Id", "in": "header", "required": False,
    "description": "The workspace to act in (default: your first). Not a member → 404.",
    "schema": {"type": "integer", "minimum": 1},
}
AUTH_ERRORS = {
    401: "no, invalid, expired or revoked credentials (`code` says which)",
    403: "your role in the workspace is too low for this",
    404: "not found in your workspace (other workspaces' objects are never revealed)",
    429: "rate limited; `Retry-After` says when to try again",
}


def _workspace_id() -> int | None:
    raw = request.headers.get("X-Workspace-Id")
    if raw is None or raw.strip() == "":
        return None
    if not raw.strip().isdigit() or len(raw.strip()) > 12:
        raise ApiError(400, "bad_workspace_header", "X-Workspace-Id must be a workspace id (an integer)",
                       {"X-Workspace-Id": ["not an integer"]})
    return int(raw)


def current_principal() -> Principal:
    workspace_id = _workspace_id()
    key = request.headers.get("X-API-Key")
    if key:
        return principal_from_api_key(key.strip(), workspace_id)
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        settings = current_app.extensions["hookhub"].settings
        return principal_from_token(header[7:].strip(), settings, workspace_id)
    raise ApiError(401, "unauthorized",
                   "authentication required: send Authorization: Bearer <access_token> or X-API-Key: <key>",
                   headers={"WWW-Authenticate": 'Bearer realm="hookhub"'})


def has_credentials() -> bool:
    return bool(request.headers.get("X-API-Key") or request.headers.get("Authorization"))


def auth_required(role: str = "viewer", *, instance_admin: bool = False, token_only: bool = False):
    """Require a caller with at least ``role`` in the current workspace; documents the security scheme.

    ``instance_admin`` also requires a hub administrator (a user's token, never an API key);
    ``token_only`` refuses API keys (for managing one's own credentials).
    """

    def decorator(fn):
        @wraps(fn)
        def wrapper(*args, **kwargs):
            principal = current_principal()
            if (instance_admin or token_only) and principal.via != "token":
                raise ApiError(403, "token_required", "this needs a user's access token, not an API key")
            if instance_admin and not principal.is_admin:
                raise ApiError(403, "forbidden", "this needs a hub administrator")
            if not principal.can(role):
                raise ApiError(403, "forbidden", f"this needs the {role} role in the workspace")
            g.principal = principal
            return fn(*args, **kwargs)

        doc = {"security": SECURITY, "parameters": [WORKSPACE_HEADER]}
        return Blueprint.doc(**doc)(wrapper)

    return decorator


def owned_or_404(model, object_id: int, code: str, what: str):
    """An object of the caller's workspace, or a 404 — never a 403: other workspaces' objects do not exist."""
    obj = model.get_or_none((model.id == object_id) & (model.workspace == g.principal.workspace_id))
    if obj is None:
        raise ApiError(404, code, f"no {what} with id {object_id}")
    return obj
