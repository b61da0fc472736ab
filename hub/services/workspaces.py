"""Workspaces and memberships. Every object belongs to one workspace; roles are per workspace."""

from __future__ import annotations

import peewee

from hub.api.errors import ApiError
from hub.db import write_transaction
from hub.models import ApiKey, Membership, RefreshToken, User, Workspace, utcnow


def create_workspace(user_id: int, name: str) -> Workspace:
    with write_transaction():
        workspace = Workspace.create(name=name)
        Membership.create(user=user_id, workspace=workspace, role="admin")
    return workspace


def get_membership(workspace_id: int, user_id: int) -> Membership:
    m = Membership.get_or_none((Membership.workspace == workspace_id) & (Membership.user == user_id))
    if m is None:
        raise ApiError(404, "member_not_found", f"user {user_id} is not a member of workspace {workspace_id}")
    return m


def _admins_left(workspace_id: int, without_user: int) -> int:
    return Membership.select().where((Membership.workspace == workspace_id) & (Membership.role == "admin")
                                     & (Membership.user != without_user)).count()


def add_member(workspace_id: int, user: User, role: str) -> Membership:
    try:
        with write_transaction():
            return Membership.create(user=user.id, workspace=workspace_id, role=role)
    except peewee.IntegrityError:
        raise ApiError(409, "already_member", f"{user.email} is already a member of this workspace") from None


def set_role(workspace_id: int, user_id: int, role: str) -> Membership:
    with write_transaction():
        m = get_membership(workspace_id, user_id)
        if m.role == "admin" and role != "admin" and not _admins_left(workspace_id, user_id):
            raise ApiError(409, "last_admin", "a workspace needs at least one admin; promote another member first")
        Membership.update(role=role).where(Membership.id == m.id).execute()
        return Membership.get_by_id(m.id)


def remove_member(workspace_id: int, user_id: int) -> None:
    with write_transaction():
        m = get_membership(workspace_id, user_id)
        if m.role == "admin" and not _admins_left(workspace_id, user_id):
            raise ApiError(409, "last_admin", "a workspace needs at least one admin; promote another member first")
        m.delete_instance()
        # The member's keys for this workspace die with the membership.
        ApiKey.update(revoked_at=utcnow()).where(
            (ApiKey.workspace == workspace_id) & (ApiKey.user == user_id) & ApiKey.revoked_at.is_null()).execute()


def update_user(user: User, *, is_admin: bool | None, is_active: bool | None) -> User:
    with write_transaction():
        if (is_admin is False or is_active is False) and user.is_admin and not User.select().where(
                User.is_admin & User.is_active & (User.id != user.id)).exists():
            raise ApiError(409, "last_admin", "the hub needs at least one active admin")
        changes = {}
        if is_admin is not None:
            changes["is_admin"] = is_admin
        if is_active is not None:
            changes["is_active"] = is_active
        if changes:
            User.update(**changes).where(User.id == user.id).execute()
        if is_active is False:
            RefreshToken.update(revoked_at=utcnow()).where(
                (RefreshToken.user == user.id) & RefreshToken.revoked_at.is_null()).execute()
    return User.get_by_id(user.id)
