"""Workspaces: mine, create, rename; members with roles (admin, editor, viewer)."""

from __future__ import annotations

from flask import g
from flask.views import MethodView
from flask_smorest import Blueprint

from hub.api.errors import ApiError
from hub.api.pagination import PageArgs, page_of
from hub.api.security import auth_required
from hub.api.workspaces.schemas import (
    MemberInSchema,
    MemberPageSchema,
    MemberSchema,
    RoleSchema,
    WorkspaceInSchema,
    WorkspacePageSchema,
    WorkspaceSchema,
)
from hub.models import Membership, User, Workspace, iso
from hub.services import workspaces as service

blp = Blueprint("workspaces", __name__, url_prefix="/api/v1/workspaces",
                description="Workspaces and their members; other workspaces are invisible (404)")



def workspace_doc(m: Membership) -> dict:
    w = m.workspace
    return {"id": w.id, "name": w.name, "role": m.role, "created_at": iso(w.created_at)}


def member_doc(m: Membership) -> dict:
    return {"user_id": m.user_id, "email": m.user.email, "role": m.role}


def my_membership(workspace_id: int, role: str = "viewer") -> Membership:
    """The caller's membership of a workspace named in the path: 404 for non-members, 403 if too low."""
    p = g.principal
    m = None
    if p.via == "token" or p.workspace_id == workspace_id:
        m = Membership.get_or_none((Membership.workspace == workspace_id) & (Membership.user == p.user_id))
    if m is None:
        raise ApiError(404, "workspace_not_found", f"no workspace with id {workspace_id}")
    effective = m.role if p.via == "token" else p.role  # an API key is capped by its scopes
    if ("viewer", "editor", "admin").index(effective) < ("viewer", "editor", "admin").index(role):
        raise ApiError(403, "forbidden", f"this needs the {role} role in workspace {workspace_id}")
    return m


@blp.route("")
class Workspaces(MethodView):
    @auth_required()
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, WorkspacePageSchema)
    def get(self, args):
        """List the workspaces you are a member of, with your role in each"""
        query = (Membership.select(Membership, Workspace).join(Workspace)
                 .where(Membership.user == g.principal.user_id).order_by(Workspace.id))
        if g.principal.via != "token":
            query = query.where(Membership.workspace == g.principal.workspace_id)
        return page_of(query, args, workspace_doc)

    @auth_required(token_only=True)
    @blp.arguments(WorkspaceInSchema)
    @blp.response(201, WorkspaceSchema)
    def post(self, body):
        """Create a workspace; you become its admin"""
        workspace = service.create_workspace(g.principal.user_id, body["name"])
        return workspace_doc(service.get_membership(workspace.id, g.principal.user_id))


@blp.route("/<int:workspace_id>")
class WorkspaceById(MethodView):
    @auth_required()
    @blp.response(200, WorkspaceSchema)
    def get(self, workspace_id):
        """A workspace you are a member of"""
        return workspace_doc(my_membership(workspace_id))

    @auth_required()
    @blp.arguments(WorkspaceInSchema)
    @blp.response(200, WorkspaceSchema)
    def put(self, body, workspace_id):
        """Rename a workspace (workspace admins)"""
        m = my_membership(workspace_id, "admin")
        Workspace.update(name=body["name"]).where(Workspace.id == workspace_id).execute()
        return workspace_doc(Membership.get_by_id(m.id))


@blp.route("/<int:workspace_id>/members")
class Members(MethodView):
    @auth_required()
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, MemberPageSchema)
    def get(self, args, workspace_id):
        """List a workspace's members and their roles"""
        my_membership(workspace_id)
        query = (Membership.select(Membership, User).join(User)
                 .where(Membership.workspace == workspace_id).order_by(Membership.id))
        return page_of(query, args, member_doc)

    @auth_required()
    @blp.arguments(MemberInSchema)
    @blp.response(201, MemberSchema)
    def post(self, body, workspace_id):
        """Add an existing user (by id or email) with a role (workspace admins)"""
        my_membership(workspace_id, "admin")
        if "user_id" in body:
            user = User.get_or_none(User.id == body["user_id"])
        else:
            user = User.get_or_none(User.email == body["email"].strip().lower())
        if user is None:
            raise ApiError(404, "user_not_found", "no such user; a hub admin adds users with POST /api/v1/users")
        return member_doc(service.add_member(workspace_id, user, body["role"]))


@blp.route("/<int:workspace_id>/members/<int:user_id>")
class MemberById(MethodView):
    @auth_required()
    @blp.arguments(RoleSchema)
    @blp.response(200, MemberSchema)
    def put(self, body, workspace_id, user_id):
        """Change a member's role (workspace admins); the last admin cannot be demoted"""
        my_membership(workspace_id, "admin")
        return member_doc(service.set_role(workspace_id, user_id, body["role"]))

    @auth_required()
    @blp.response(204)
    def delete(self, workspace_id, user_id):
        """Remove a member (workspace admins, or yourself); their API keys for it are revoked"""
        my_membership(workspace_id, "viewer" if user_id == g.principal.user_id else "admin")
        service.remove_member(workspace_id, user_id)
