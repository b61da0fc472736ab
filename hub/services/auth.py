"""Users, passwords (argon2), JWT access tokens, rotating refresh tokens and API keys.

Who may do what is decided here, once: a :class:`Principal` is a user acting in one workspace with one
role (viewer < editor < admin). Bearer tokens carry the user; the workspace comes from
``X-Workspace-Id`` (default: the user's first). API keys are bound to one workspace and carry scopes
(read → viewer, write → editor, admin → admin), never more than the creating user's current role there.
"""

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
from hub.models import ApiKey, Membership, RefreshToken, RevokedAccessToken, User, Workspace, utcnow

_hasher = PasswordHasher()
# Verifying against this keeps a login for an unknown email as slow as one for a known email.
_DUMMY_HASH = _hasher.hash("not-a-real-password")

ROLES = ("viewer", "editor", "admin")
SCOPE_ROLES = {"read": "viewer", "write": "editor", "admin": "admin"}
API_KEY_PREFIX = "hh_"
#: last_used_at is written at most this often per key, so reads do not become writes
_LAST_USED_RESOLUTION = dt.timedelta(seconds=60)


def role_rank(role: str) -> int:
    return ROLES.index(role)


def lesser_role(a: str, b: str) -> str:
    return a if role_rank(a) <= role_rank(b) else b


@dataclass(frozen=True)
class Principal:
    user_id: int
    workspace_id: int
    role: str
    is_admin: bool
    #: "token" (a user's access token) or "api_key"
    via: str = "token"
    api_key_id: int | None = None
    #: the access token's id and expiry, so logout can revoke exactly this token
    jti: str | None = None
    expires_at: dt.datetime | None = None

    def can(self, role: str) -> bool:
        return role_rank(self.role) >= role_rank(role)


# --- users ----------------------------------------------------------------------------------------


def create_user(email: str, password: str, *, is_admin: bool = False) -> User:
    """A user with a workspace of their own (where they are admin). Caller holds a write transaction."""
    email = email.strip().lower()
    try:
        with write_transaction():
            user = User.create(email=email, password_hash=_hasher.hash(password), is_admin=is_admin)
    except peewee.IntegrityError:
        raise ApiError(409, "email_taken", f"a user with email {email} already exists") from None
    workspace = Workspace.create(name=f"{email}'s workspace")
    Membership.create(user=user, workspace=workspace, role="admin")
    return user


def register(email: str, password: str, *, settings: Settings, caller: Principal | None) -> User:
    with write_transaction():
        first = not User.select().exists()
        if not first and not settings.open_registration and not (
                caller and caller.is_admin and caller.via == "token"):
            raise ApiError(403, "registration_closed",
                           "registration is closed; an admin must add users (or set HOOKHUB_OPEN_REGISTRATION=true)")
        return create_user(email, password, is_admin=first)


def authenticate(email: str, password: str) -> User:
    user = User.get_or_none(User.email == email.strip().lower())
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        user = None
    if user is None or not user.is_active:
        raise ApiError(401, "invalid_credentials", "wrong email or password")
    return user


def set_password(user: User, password: str) -> None:
    User.update(password_hash=_hasher.hash(password)).where(User.id == user.id).execute()


# --- tokens ---------------------------------------------------------------------------------------


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
        if row is None or row.revoked_at or row.expires_at < now or not row.user.is_active:
            raise ApiError(401, "invalid_refresh_token", "the refresh token is unknown, expired or revoked")
        # Conditional on used_at still being null: of two concurrent refreshes only one rotates it.
        won = row.used_at is None and RefreshToken.update(used_at=now).where(
            (RefreshToken.id == row.id) & RefreshToken.used_at.is_null()).execute()
        if won:
            return issue_tokens(row.user, settings, family=row.family)
        # Reuse: the revocation must commit, so it happens here and the refusal is raised after.
        RefreshToken.update(revoked_at=now).where(
            (RefreshToken.family == row.family) & RefreshToken.revoked_at.is_null()).execute()
    raise ApiError(401, "refresh_token_reused",
                   "this refresh token was already used; every token of its session is now revoked")


def logout(token: str | None, principal: Principal) -> None:
    """Revoke the caller's access token and the refresh token's session (without one: every session)."""
    now = utcnow()
    with write_transaction():
        if principal.jti:
            RevokedAccessToken.insert(
                jti=principal.jti, user=principal.user_id, expires_at=principal.expires_at or now,
            ).on_conflict(conflict_target=[RevokedAccessToken.jti], action="NOTHING").execute()
        # Forget denylist entries that expired anyway: the table stays as small as the live tokens.
        RevokedAccessToken.delete().where(RevokedAccessToken.expires_at < now).execute()
        query = RefreshToken.update(revoked_at=now).where(
            (RefreshToken.user == principal.user_id) & RefreshToken.revoked_at.is_null())
        if token:
            row = RefreshToken.get_or_none(RefreshToken.token_hash == sha256_hex(token))
            if row is None or row.user_id != principal.user_id:
                return
            query = query.where(RefreshToken.family == row.family)
        query.execute()


def principal_from_token(token: str, settings: Settings, workspace_id: int | None) -> Principal:
    try:
        claims = jwt.decode(token, settings.secret_key, algorithms=["HS256"],
                            options={"require": ["exp", "sub", "jti"]})
    except jwt.ExpiredSignatureError:
        raise ApiError(401, "token_expired", "the access token has expired; refresh it") from None
    except jwt.InvalidTokenError:
        raise ApiError(401, "invalid_token", "the access token is invalid") from None
    if claims.get("typ") != "access" or not str(claims["sub"]).isdigit():
        raise ApiError(401, "invalid_token", "not an access token")
    if RevokedAccessToken.select().where(RevokedAccessToken.jti == str(claims["jti"])).exists():
        raise ApiError(401, "token_revoked", "the access token was revoked by logout; log in again")
    user = User.get_or_none(User.id == int(claims["sub"]))
    if user is None or not user.is_active:
        raise ApiError(401, "invalid_token", "the token's user no longer exists or is deactivated")
    base = _principal(user, workspace_id)
    expires = dt.datetime.fromtimestamp(int(claims["exp"]), dt.UTC).replace(tzinfo=None)
    return Principal(base.user_id, base.workspace_id, base.role, base.is_admin, "token", None,
                     str(claims["jti"]), expires)


def _principal(user: User, workspace_id: int | None) -> Principal:
    query = Membership.select().where(Membership.user == user.id).order_by(Membership.id)
    if workspace_id is not None:
        query = query.where(Membership.workspace == workspace_id)
    membership = query.first()
    if membership is None:
        if workspace_id is not None:
            # Another workspace's existence is not revealed: same answer as for one that does not exist.
            raise ApiError(404, "workspace_not_found", f"no workspace with id {workspace_id}")
        raise ApiError(403, "no_workspace", "you are not a member of any workspace; ask an admin to add you")
    return Principal(user_id=user.id, workspace_id=membership.workspace_id, role=membership.role,
                     is_admin=user.is_admin)


# --- API keys -------------------------------------------------------------------------------------


def scopes_role(scopes: list[str]) -> str:
    return max((SCOPE_ROLES[s] for s in scopes), key=role_rank, default="viewer")


def create_api_key(principal: Principal, name: str, scopes: list[str]) -> tuple[ApiKey, str]:
    """A new key for the caller's workspace; the plain key is returned once and only its hash is kept."""
    wanted = scopes_role(scopes)
    if role_rank(wanted) > role_rank(principal.role):
        raise ApiError(403, "scope_exceeds_role",
                       f"scopes {sorted(scopes)} need the {wanted} role; you are {principal.role} in this workspace",
                       {"scopes": [f"at most the {principal.role} role's scopes"]})
    public = secrets.token_hex(4)
    key = f"{API_KEY_PREFIX}{public}_{secrets.token_urlsafe(32)}"
    row = ApiKey.create(workspace=principal.workspace_id, user=principal.user_id, name=name,
                        prefix=f"{API_KEY_PREFIX}{public}", key_hash=sha256_hex(key),
                        scopes=sorted(set(scopes)))
    return row, key


def principal_from_api_key(key: str, workspace_id: int | None) -> Principal:
    invalid = ApiError(401, "invalid_api_key", "the API key is unknown or revoked",
                       headers={"WWW-Authenticate": 'ApiKey realm="hookhub"'})
    if not key.startswith(API_KEY_PREFIX) or len(key) > 200:
        raise invalid
    row = ApiKey.get_or_none(ApiKey.key_hash == sha256_hex(key))
    if row is None or row.revoked_at is not None or not row.user.is_active:
        raise invalid
    if workspace_id is not None and workspace_id != row.workspace_id:
        raise ApiError(404, "workspace_not_found", f"no workspace with id {workspace_id}")
    membership = Membership.get_or_none((Membership.user == row.user_id) & (Membership.workspace == row.workspace_id))
    if membership is None:  # its creator left the workspace: the key dies with the membership
        raise invalid
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > _LAST_USED_RESOLUTION:
        ApiKey.update(last_used_at=now).where(ApiKey.id == row.id).execute()
    # API keys never carry instance-admin powers (user management): a leaked key stays in its workspace.
    return Principal(user_id=row.user_id, workspace_id=row.workspace_id,
                     role=lesser_role(scopes_role(row.scopes), membership.role), is_admin=False,
                     via="api_key", api_key_id=row.id)
