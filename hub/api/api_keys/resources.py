"""API keys: create (the key is shown once), list, revoke."""

from __future__ import annotations

from flask import g
from flask.views import MethodView
from flask_smorest import Blueprint

from hub.api.api_keys.schemas import ApiKeyCreatedSchema, ApiKeyInSchema, ApiKeyListArgs, ApiKeyPageSchema
from hub.api.errors import ApiError
from hub.api.pagination import page_of
from hub.api.security import auth_required
from hub.models import ApiKey, iso, utcnow
from hub.services import auth

blp = Blueprint("api-keys", __name__, url_prefix="/api/v1/api-keys",
                description="API keys: `X-API-Key: <key>`; scoped, stored hashed, shown once, revocable")



def key_doc(row: ApiKey) -> dict:
    return {"id": row.id, "name": row.name, "prefix": row.prefix, "scopes": list(row.scopes),
            "workspace_id": row.workspace_id, "user_id": row.user_id, "created_at": iso(row.created_at),
            "last_used_at": iso(row.last_used_at), "revoked_at": iso(row.revoked_at)}


def _visible():
    """Workspace admins see every key of the workspace; others their own."""
    query = ApiKey.select().where(ApiKey.workspace == g.principal.workspace_id)
    if not g.principal.can("admin"):
        query = query.where(ApiKey.user == g.principal.user_id)
    return query


@blp.route("")
class ApiKeys(MethodView):
    @auth_required(token_only=True)
    @blp.arguments(ApiKeyInSchema)
    @blp.response(201, ApiKeyCreatedSchema)
    def post(self, body):
        """Create an API key for the current workspace; the key is in this answer only"""
        row, key = auth.create_api_key(g.principal, body["name"], body["scopes"])
        return key_doc(row) | {"key": key}

    @auth_required()
    @blp.arguments(ApiKeyListArgs, location="query")
    @blp.response(200, ApiKeyPageSchema)
    def get(self, args):
        """List API keys (admins: the workspace's; others: their own); never the keys themselves"""
        query = _visible().order_by(ApiKey.id)
        if not args["include_revoked"]:
            query = query.where(ApiKey.revoked_at.is_null())
        return page_of(query, args, key_doc)


@blp.route("/<int:key_id>")
class ApiKeyById(MethodView):
    @auth_required()
    @blp.response(204)
    def delete(self, key_id):
        """Revoke an API key (at once: the next request with it is refused)"""
        row = _visible().where(ApiKey.id == key_id).first()
        if row is None:
            raise ApiError(404, "api_key_not_found", f"no API key with id {key_id}")
        if row.revoked_at is None:
            ApiKey.update(revoked_at=utcnow()).where(ApiKey.id == row.id).execute()
