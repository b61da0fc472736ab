"""Sandboxed runtimes for connector attempts, usable without Flask or the hub.

One interface for every backend::

    result = backend.run(spec, payload, limits)

``payload`` is the JSON document a connector sees: ``{"config": …, "input": …, "context": …}``.
A backend never raises for anything the connector does (crash, timeout, memory, hostile output):
that all comes back as a failed :class:`Result` with a clear ``error`` and an ``error_kind``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["ConnectorSpec", "Limits", "Result", "Sandbox"]


@dataclass(frozen=True)
class Limits:
    """What one attempt may use. Operators cap these; nodes may ask for less or more within the cap."""

    timeout_seconds: float = 30.0
    memory_mb: int = 256
    network: bool = False
    max_output_bytes: int = 1 << 20
    max_file_bytes: int = 64 << 20
    max_open_files: int = 256
    max_processes: int = 64


@dataclass(frozen=True)
class ConnectorSpec:
    """What to run.

    ``kind`` is ``"python"`` (``target`` = ``"package.module:ClassName"``, a :class:`hub.sdk.Connector`
    subclass) or ``"wasm"`` (``target`` = path of a WASI command module).
    """

    kind: str
    target: str


@dataclass
class Result:
    ok: bool
    output: Any = None
    #: human-readable, e.g. "timed out after 30 s", "exceeded memory limit 256 MiB"
    error: str | None = None
    #: stable machine code: connector, timeout, memory, output_too_large, network, crashed, bad_output,
    #: cancelled (the caller set the run's cancel event)
    error_kind: str | None = None
    retryable: bool = False
    retry_after: float | None = None
    duration_ms: float = 0.0
    #: log lines the connector wrote through ctx.log (bounded)
    logs: list[str] = field(default_factory=list)


class Sandbox(Protocol):
    def run(self, spec: ConnectorSpec, payload: dict[str, Any], limits: Limits) -> Result: ...

    def close(self) -> None: ...
