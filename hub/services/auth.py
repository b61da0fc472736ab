"""Users, passwords (argon2), JWT access tokens and rotating refresh tokens."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from dataclasses import dataclass

import jwt
import peewee
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from hub.api.errors import ApiError
from hub.config import Settings
from hub.crypto import sha256_hex
from hub.db import write_transaction
from hub.models import Membership, RefreshToken, User, Workspace, utcnow

_hasher = PasswordHasher()
# Verifying against this keeps a login for an unknown email as slow as one for a known email.
_DUMMY_HASH = _hasher.hash("not-a-real-password")

ROLES = ("viewer", "editor", "admin")


@dataclass(frozen=True)
class Principal:
    user_id: int
    workspace_id: int
    role: str
    is_admin: bool

    def can(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


def register(email: str, password: str, *, settings: Settings, caller: Principal | None) -> User:
    email = email.strip().lower()
    with write_transaction():
        first = not User.select().exists()
        if not first and not settings.open_registration and not (caller and caller.is_admin):
            raise ApiError(403, "registration_closed",
                           "registration is closed; an admin must add users (or set HOOKHUB_OPEN_REGISTRATION=true)")
        try:
            user = User.create(email=email, password_hash=_hasher.hash(password), is_admin=first)
        except peewee.IntegrityError:
            raise ApiError(409, "email_taken", f"a user with email {email} already exists") from None
        workspace = Workspace.create(name=f"{email}'s workspace")
        Membership.create(user=user, workspace=workspace, role="admin")
    return user


def authenticate(email: str, password: str) -> User:
    user = User.get_or_none(User.email == email.strip().lower())
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        user = None
    if user is None or not user.is_active:
        raise ApiError(401, "invalid_credentials", "wrong email or password")
    return user


def issue_tokens(user: User, settings: Settings, family: str | None = None) -> dict:
    now = dt.datetime.now(dt.UTC)
    access = jwt.encode(
        {"sub": str(user.id), "iat": now, "exp": now + dt.timedelta(seconds=settings.access_token_ttl_seconds),
         "jti": uuid.uuid4().hex, "typ": "access"},
        settings.secret_key, algorithm="HS256",
    )
    refresh = secrets.token_urlsafe(32)
    RefreshToken.create(
        user=user, token_hash=sha256_hex(refresh), family=family or uuid.uuid4().hex,
        expires_at=utcnow() + dt.timedelta(seconds=settings.refresh_token_ttl_seconds),
    )
    return {"access_token": access, "refresh_token": refresh, "token_type": "Bearer",
            "expires_in": settings.access_token_ttl_seconds}


def refresh_tokens(token: str, settings: Settings) -> dict:
    """Rotate a refresh token. Presenting one that was already rotated revokes its whole family."""
    now = utcnow()
    with write_transaction():
        row = RefreshToken.get_or_none(RefreshToken.token_hash == sha256_hex(token))
        if row is None or row.revoked_at or row.expires_at < now:
            raise ApiError(401, "invalid_refresh_token", "the refresh token is unknown, expired or revoked")
        if row.used_at is not None:
            RefreshToken.update(revoked_at=now).where(
                (RefreshToken.family == row.family) & RefreshToken.revoked_at.is_null()).execute()
            raise ApiError(401, "refresh_token_reused",
                           "this refresh token was already used; every token of its session is now revoked")
        RefreshToken.update(used_at=now).where(RefreshToken.id == row.id).execute()
        return issue_tokens(row.user, settings, family=row.family)


def logout(token: str | None, user_id: int) -> None:
    """Revoke the refresh token's family (its session); without a token, every session of the user."""
    now = utcnow()
    query = RefreshToken.update(revoked_at=now).where(
        (RefreshToken.user == user_id) & RefreshToken.revoked_at.is_null())
    if token:
        row = RefreshToken.get_or_none(RefreshToken.token_hash == sha256_hex(token))
        if row is None or row.user_id != user_id:
            return
        query = query.where(RefreshToken.family == row.family)
    query.execute()


def principal_from_token(token: str, settings: Settings, workspace_id: int | None) -> Principal:
    try:
        claims = jwt.decode(token, settings.secret_key, algorithms=["HS256"], options={"require": ["exp", "sub"]})
    except jwt.ExpiredSignatureError:
        raise ApiError(401, "token_expired", "the access token has expired; refresh it") from None
    except jwt.InvalidTokenError:
        raise ApiError(401, "invalid_token", "the access token is invalid") from None
    if claims.get("typ") != "access":
        raise ApiError(401, "invalid_token", "not an access token")
    user = User.get_or_none(User.id == int(claims["sub"]))
    if user is None or not user.is_active:
        raise ApiError(401, "invalid_token", "the token's user no longer exists")
    return _principal(user, workspace_id)


def _principal(user: User, workspace_id: int | None) -> Principal:
    query = Membership.select().where(Membership.user == user.id).order_by(Membership.id)
    if workspace_id is not None:
        query = query.where(Membership.workspace == workspace_id)
    membership = query.first()
    if membership is None:
        raise ApiError(403, "no_workspace", "you are not a member of that workspace")
    return Principal(user_id=user.id, workspace_id=membership.workspace_id, role=membership.role,
                     is_admin=user.is_admin)
