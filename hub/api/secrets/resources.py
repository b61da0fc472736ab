"""Secrets: create, list (names only), rotate, delete. Values are write-only."""

from __future__ import annotations

from flask import current_app, g
from flask.views import MethodView
from flask_smorest import Blueprint

from hub.api.errors import ApiError
from hub.api.pagination import page_of
from hub.api.secrets.schemas import (
    NAME,
    SecretInSchema,
    SecretListArgs,
    SecretPageSchema,
    SecretSchema,
    SecretValueSchema,
)
from hub.api.security import auth_required
from hub.models import Secret, iso
from hub.services import secrets as service

blp = Blueprint("secrets", __name__, url_prefix="/api/v1/secrets",
                description="Workspace secrets for `{{ secrets.NAME }}`: encrypted at rest, values write-only")


def _box():
    return current_app.extensions["hookhub"].secret_box



def secret_doc(row: Secret) -> dict:
    return {"name": row.name, "created_at": iso(row.created_at), "updated_at": iso(row.updated_at)}


def _name(name: str) -> str:
    try:
        NAME(name)
    except Exception:
        # An invalid name can name no secret: the same answer as a missing one.
        raise ApiError(404, "secret_not_found", f"no secret named {name[:128]}") from None
    return name


@blp.route("")
class Secrets(MethodView):
    @auth_required("editor")
    @blp.arguments(SecretInSchema)
    @blp.response(201, SecretSchema)
    def post(self, body):
        """Create a secret"""
        return secret_doc(service.create_secret(g.principal.workspace_id, body["name"], body["value"], _box()))

    @auth_required()
    @blp.arguments(SecretListArgs, location="query")
    @blp.response(200, SecretPageSchema)
    def get(self, args):
        """List the workspace's secrets: names and dates, never values"""
        query = Secret.select().where(Secret.workspace == g.principal.workspace_id).order_by(Secret.name)
        return page_of(query, args, secret_doc)


@blp.route("/<string:name>")
class SecretByName(MethodView):
    @auth_required("editor")
    @blp.arguments(SecretValueSchema)
    @blp.response(200, SecretSchema)
    def put(self, body, name):
        """Rotate a secret's value"""
        return secret_doc(service.rotate_secret(g.principal.workspace_id, _name(name), body["value"], _box()))

    @auth_required("editor")
    @blp.response(204)
    def delete(self, name):
        """Delete a secret; nodes that reference it fail with a template error"""
        service.delete_secret(g.principal.workspace_id, _name(name))
