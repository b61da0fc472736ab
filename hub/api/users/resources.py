"""Users, for hub administrators: add users, list, deactivate, promote, reset a password."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import Blueprint

from hub.api.errors import ApiError
from hub.api.pagination import page_of
from hub.api.security import auth_required
from hub.api.users.schemas import UserAdminSchema, UserInSchema, UserListArgs, UserPageSchema, UserPatchSchema
from hub.db import write_transaction
from hub.models import User, iso
from hub.services import auth
from hub.services import workspaces as service

blp = Blueprint("users", __name__, url_prefix="/api/v1/users",
                description="Users (hub administrators only; each new user gets a workspace of their own)")



def user_doc(u: User) -> dict:
    return {"id": u.id, "email": u.email, "is_admin": u.is_admin, "is_active": u.is_active,
            "created_at": iso(u.created_at)}


def get_user(user_id: int) -> User:
    user = User.get_or_none(User.id == user_id)
    if user is None:
        raise ApiError(404, "user_not_found", f"no user with id {user_id}")
    return user


@blp.route("")
class Users(MethodView):
    @auth_required(instance_admin=True)
    @blp.arguments(UserListArgs, location="query")
    @blp.response(200, UserPageSchema)
    def get(self, args):
        """List users"""
        return page_of(User.select().order_by(User.id), args, user_doc)

    @auth_required(instance_admin=True)
    @blp.arguments(UserInSchema)
    @blp.response(201, UserAdminSchema)
    def post(self, body):
        """Add a user (with a workspace of their own); add them to others with the members routes"""
        with write_transaction():
            return user_doc(auth.create_user(body["email"], body["password"], is_admin=body["is_admin"]))


@blp.route("/<int:user_id>")
class UserById(MethodView):
    @auth_required(instance_admin=True)
    @blp.response(200, UserAdminSchema)
    def get(self, user_id):
        """Read a user"""
        return user_doc(get_user(user_id))

    @auth_required(instance_admin=True)
    @blp.arguments(UserPatchSchema)
    @blp.response(200, UserAdminSchema)
    def patch(self, body, user_id):
        """Promote, demote, deactivate (ends their sessions) or reset the password of a user"""
        user = service.update_user(get_user(user_id), is_admin=body.get("is_admin"),
                                   is_active=body.get("is_active"))
        if body.get("password"):
            auth.set_password(user, body["password"])
        return user_doc(user)
