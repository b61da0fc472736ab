"""Settings: HOOKHUB_* environment variables (SPEC §1), read once and checked at start.

A bad setting raises :class:`ConfigError` whose message is one line naming the variable; the CLI prints
it and exits 2 instead of showing a traceback.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from dotenv import load_dotenv

__all__ = ["ConfigError", "Settings", "load_settings"]


class ConfigError(Exception):
    """A setting is missing, malformed or unreachable. ``str()`` is one line naming the variable."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    redis_url: str | None
    secret_key: str
    allow_private_networks: tuple[str, ...] = ()
    open_registration: bool = False
    #: seconds an attempt may outlive its timeout before a reaper calls it lost
    lease_grace_seconds: float = 10.0
    #: how often a reaper looks for lost attempts, unqueued ready nodes and due retries
    reaper_interval_seconds: float = 5.0
    #: a ready node whose message has been in the queue this long without a claim is enqueued again
    requeue_after_seconds: float = 15.0
    max_timeout_seconds: float = 900.0
    max_memory_mb: int = 2048
    default_timeout_seconds: float = 30.0
    default_memory_mb: int = 256
    #: how much lower than the API workers run (``nice``): under overload, accepting webhooks comes first
    worker_nice: int = 10
    access_token_ttl_seconds: int = 900
    refresh_token_ttl_seconds: int = 30 * 86400
    public_url: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def queue_path(self) -> Path:
        return self.data_dir / "queue.db"


def _bool(name: str, env: dict[str, str], default: bool = False) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name}: expected true or false, got {raw!r}")


def _number(name: str, env: dict[str, str], default: float, cast=float, minimum: float = 0):
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name}: must be at least {minimum}, got {raw!r}")
    return value


def _secret_key(data_dir: Path, env: dict[str, str]) -> str:
    key = env.get("HOOKHUB_SECRET_KEY")
    if key:
        if len(key) < 32:
            raise ConfigError("HOOKHUB_SECRET_KEY: must be at least 32 characters")
        return key
    path = data_dir / "secret.key"
    try:
        if path.exists():
            return path.read_text().strip()
        # Written once, readable by the hub's user only: sandboxed connectors run as other users.
        key = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key)
        return key
    except FileExistsError:
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"HOOKHUB_SECRET_KEY: cannot read or create {path}: {exc.strerror}") from None


def _private_networks(env: dict[str, str]) -> tuple[str, ...]:
    raw = env.get("HOOKHUB_ALLOW_PRIVATE_NETWORKS", "")
    items = tuple(part.strip() for part in raw.split(",") if part.strip())
    for item in items:
        if item == "*":
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ConfigError(f"HOOKHUB_ALLOW_PRIVATE_NETWORKS: {item!r} is not a CIDR or '*'") from None
    return items


def load_settings(env: dict[str, str] | None = None, *, dotenv: bool = True) -> Settings:
    """Read settings from ``env`` (default: the process environment plus ``.env``)."""
    if env is None:
        if dotenv:
            load_dotenv(override=False)
        env = dict(os.environ)

    data_dir = Path(env.get("HOOKHUB_DATA_DIR") or "./hookhub-data").expanduser().resolve()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(data_dir, 0o700)
    except OSError as exc:
        raise ConfigError(f"HOOKHUB_DATA_DIR: cannot create {data_dir}: {exc.strerror}") from None

    database_url = env.get("HOOKHUB_DATABASE_URL") or f"sqlite:///{data_dir / 'hookhub.db'}"
    scheme = urlparse(database_url).scheme
    if scheme not in {"sqlite", "postgres", "postgresql"}:
        raise ConfigError(
            f"HOOKHUB_DATABASE_URL: unsupported scheme {scheme!r} (use sqlite:///PATH or postgresql://…)"
        )

    redis_url = env.get("HOOKHUB_REDIS_URL") or None
    if redis_url and urlparse(redis_url).scheme not in {"redis", "rediss", "unix"}:
        raise ConfigError(f"HOOKHUB_REDIS_URL: expected redis://…, got {redis_url!r}")

    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        redis_url=redis_url,
        secret_key=_secret_key(data_dir, env),
        allow_private_networks=_private_networks(env),
        open_registration=_bool("HOOKHUB_OPEN_REGISTRATION", env),
        lease_grace_seconds=_number("HOOKHUB_LEASE_GRACE_SECONDS", env, 10.0),
        reaper_interval_seconds=_number("HOOKHUB_REAPER_INTERVAL_SECONDS", env, 5.0, minimum=0.05),
        requeue_after_seconds=_number("HOOKHUB_REQUEUE_AFTER_SECONDS", env, 15.0),
        max_timeout_seconds=_number("HOOKHUB_MAX_TIMEOUT_SECONDS", env, 900.0, minimum=1),
        max_memory_mb=_number("HOOKHUB_MAX_MEMORY_MB", env, 2048, cast=int, minimum=16),
        default_timeout_seconds=_number("HOOKHUB_DEFAULT_TIMEOUT_SECONDS", env, 30.0, minimum=0.1),
        default_memory_mb=_number("HOOKHUB_DEFAULT_MEMORY_MB", env, 256, cast=int, minimum=16),
        worker_nice=_worker_nice(env),
        public_url=env.get("HOOKHUB_PUBLIC_URL") or None,
    )


def _worker_nice(env: dict[str, str]) -> int:
    value = _number("HOOKHUB_WORKER_NICE", env, 10, cast=int, minimum=0)
    if value > 19:
        raise ConfigError(f"HOOKHUB_WORKER_NICE: must be at most 19, got {env['HOOKHUB_WORKER_NICE']!r}")
    return value
