"""The public SDK that connector packages import (SPEC §4).

Keep this module small and stable: third parties depend on every name in ``__all__``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

import marshmallow
import pluggy

__all__ = [
    "Connector",
    "ConnectorError",
    "Context",
    "RetryableError",
    "hookimpl",
]

hookimpl = pluggy.HookimplMarker("hookhub")


class ConnectorError(Exception):
    """A fatal connector failure: the node fails at once, without another attempt."""

    retryable: bool = False

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class RetryableError(ConnectorError):
    """A transient failure: the node's retry policy decides whether another attempt follows.

    ``retry_after`` (seconds) asks for at least that long before the next attempt, as an HTTP
    ``Retry-After`` header would.
    """

    retryable = True


@dataclass
class Context:
    """What a connector knows about the attempt it runs in."""

    input: Any
    run_id: int
    node_id: str
    attempt: int
    idempotency_key: str
    #: CIDRs (or "*") the operator lets outbound connectors reach although private/loopback/link-local
    allowed_private_networks: tuple[str, ...] = ()
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("hookhub.connector"))


class Connector:
    """Base class of every connector.

    Subclasses set ``name`` (unique across the hub), ``version`` (semver), ``description`` and
    ``permissions``, declare a marshmallow ``Config`` schema for their node config and implement
    :meth:`run`. ``run`` executes inside a sandbox; it must return JSON-serialisable output and raise
    :class:`RetryableError` for transient faults or :class:`ConnectorError` for permanent ones.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "0.0.0"
    description: ClassVar[str] = ""
    #: ``{"network": bool}``: the sandbox denies network access unless this asks for it.
    permissions: ClassVar[dict[str, Any]] = {}
    #: which sandbox runs it: ``"subprocess"`` for Python connectors, ``"wasm"`` for WASM modules.
    sandbox: ClassVar[str] = "subprocess"

    class Config(marshmallow.Schema):
        """The node config; unknown keys are refused."""

        class Meta:
            unknown = marshmallow.RAISE

    def run(self, config: dict[str, Any], ctx: Context) -> Any:
        raise NotImplementedError
