"""Register, log in, refresh, log out, who am I."""

from __future__ import annotations

from flask import current_app, g
from flask.views import MethodView
from flask_smorest import Blueprint

from hub.api.auth.schemas import (
    LoginSchema,
    LogoutSchema,
    RefreshSchema,
    RegisterSchema,
    TokenSchema,
    UserSchema,
)
from hub.api.security import auth_required, current_principal, has_credentials
from hub.models import User
from hub.services import auth

blp = Blueprint("auth", __name__, url_prefix="/api/v1/auth", description="Users and tokens")


def _settings():
    return current_app.extensions["hookhub"].settings


def _user_doc(user: User, principal) -> dict:
    return {"id": user.id, "email": user.email, "is_admin": user.is_admin,
            "workspace_id": principal.workspace_id, "role": principal.role}


@blp.route("/register")
class Register(MethodView):
    @blp.arguments(RegisterSchema)
    @blp.response(201, UserSchema)
    def post(self, body):
        """Create a user; the first user becomes admin. Later users need open registration or an admin."""
        caller = current_principal() if has_credentials() else None
        user = auth.register(body["email"], body["password"], settings=_settings(), caller=caller)
        return _user_doc(user, auth._principal(user, None))


@blp.route("/login")
class Login(MethodView):
    @blp.arguments(LoginSchema)
    @blp.response(200, TokenSchema)
    def post(self, body):
        """Exchange email and password for an access token and a refresh token"""
        user = auth.authenticate(body["email"], body["password"])
        return auth.issue_tokens(user, _settings())


@blp.route("/refresh")
class Refresh(MethodView):
    @blp.arguments(RefreshSchema)
    @blp.response(200, TokenSchema)
    def post(self, body):
        """Rotate a refresh token; reusing an old one revokes the whole session"""
        return auth.refresh_tokens(body["refresh_token"], _settings())


@blp.route("/logout")
class Logout(MethodView):
    @auth_required(token_only=True)
    @blp.arguments(LogoutSchema)
    @blp.response(204)
    def post(self, body):
        """Revoke this access token and the given refresh token's session (without one: every session)"""
        auth.logout(body.get("refresh_token"), g.principal)


@blp.route("/me")
class Me(MethodView):
    @auth_required()
    @blp.response(200, UserSchema)
    def get(self):
        """The calling user and the current workspace"""
        return _user_doc(User.get_by_id(g.principal.user_id), g.principal)
