"""A test kit for connector authors: run a connector the way the hub does, without a hub.

::

    from hub.testing import run_connector

    def test_opens_a_ticket(server):
        result = run_connector(AcmeTicket, {"url": server.url, "title": "hi"}, input={"a": 1})
        assert result.ok, result.error
        assert result.output["id"] == 42

:func:`run_connector` runs the connector in the real subprocess sandbox (Python connectors) or the
real WASM sandbox (WASM connectors), with the payload the runtime would build: the config is
validated against the connector's ``Config`` schema first (the hub refuses a flow whose config does
not validate, so a connector never sees one), and loopback is allowed by default so tests can talk
to servers on 127.0.0.1. The :class:`sandbox.Result` it returns is what the runtime records:
``ok``, ``output``, ``error``, ``error_kind``, ``retryable``, ``retry_after`` and ``logs``.

:func:`make_context` builds a :class:`hub.sdk.Context` for calling ``Connector.run`` directly,
and :func:`run_inline` calls ``run`` in this process with the config loaded as the sandbox loads it:
quicker to debug (breakpoints work), but without the sandbox's limits.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import tempfile
import threading
import types
from collections.abc import Iterable
from typing import Any

from hub.sdk import Connector, Context, hookimpl
from sandbox import ConnectorSpec, Limits, Result

__all__ = ["LOOPBACK", "ConfigInvalid", "make_context", "make_payload", "run_connector", "run_inline"]

#: what tests allow by default: servers on this machine
LOOPBACK: tuple[str, ...] = ("127.0.0.0/8", "::1/128")


class ConfigInvalid(ValueError):
    """The config does not validate against the connector's ``Config`` schema."""

    def __init__(self, connector: str, messages: Any) -> None:
        super().__init__(f'invalid config for connector "{connector}": {messages}')
        self.messages = messages


def make_context(
    input: Any = None,
    *,
    run_id: int = 1,
    node_id: str = "node",
    attempt: int = 1,
    allowed_private_networks: Iterable[str] = LOOPBACK,
) -> Context:
    """A context as the runtime builds it (the idempotency key is sha256("run:node:attempt"))."""
    return Context(
        input=input,
        run_id=run_id,
        node_id=node_id,
        attempt=attempt,
        idempotency_key=_key(run_id, node_id, attempt),
        allowed_private_networks=tuple(allowed_private_networks),
    )


def make_payload(
    config: dict[str, Any],
    input: Any = None,
    *,
    run_id: int = 1,
    node_id: str = "node",
    attempt: int = 1,
    allowed_private_networks: Iterable[str] = LOOPBACK,
) -> dict[str, Any]:
    """The JSON document a sandbox hands a connector: ``{"config", "input", "context"}``."""
    return {
        "config": config,
        "input": input,
        "context": {
            "run_id": run_id,
            "node_id": node_id,
            "attempt": attempt,
            "idempotency_key": _key(run_id, node_id, attempt),
            "allowed_private_networks": list(allowed_private_networks),
        },
    }


def run_connector(
    connector: type[Connector] | str,
    config: dict[str, Any],
    input: Any = None,
    *,
    timeout_seconds: float = 30.0,
    memory_mb: int = 256,
    allowed_private_networks: Iterable[str] = LOOPBACK,
    validate: bool = True,
    **context: Any,
) -> Result:
    """Run ``connector`` once, sandboxed, and return the sandbox's :class:`~sandbox.Result`.

    :param connector: a :class:`hub.sdk.Connector` subclass defined at module level, or the name of
        an installed connector (``"http"``, ``"acme-ticket@1"``).
    :param config: the node config, as after template rendering.
    :param input: the node's input (what ``ctx.input`` holds).
    :param validate: check ``config`` against the connector's schema first.
    :param context: ``run_id``, ``node_id``, ``attempt`` for the context.
    :raises ConfigInvalid: the config does not validate.
    """
    cls, spec, permissions = _resolve(connector)
    if validate:
        errors = cls.Config().validate(dict(config))
        if errors:
            raise ConfigInvalid(cls.name, errors)
    payload = make_payload(config, input, allowed_private_networks=allowed_private_networks, **context)
    limits = Limits(
        timeout_seconds=timeout_seconds, memory_mb=memory_mb, network=bool(permissions.get("network"))
    )
    return _sandbox(spec.kind, cls).run(spec, payload, limits)


def run_inline(
    connector: type[Connector] | str,
    config: dict[str, Any],
    input: Any = None,
    *,
    allowed_private_networks: Iterable[str] = LOOPBACK,
    **context: Any,
) -> Any:
    """Call ``connector.run`` in this process, as the sandbox would (config loaded by the schema).

    No sandbox, so breakpoints and coverage work; exceptions (``ConnectorError``, ``RetryableError``,
    bugs) propagate instead of becoming a failed :class:`~sandbox.Result`.

    :raises ConfigInvalid: the config does not validate.
    """
    import marshmallow

    cls, _spec, _permissions = _resolve(connector)
    try:
        loaded = cls.Config().load(dict(config))
    except marshmallow.ValidationError as exc:
        raise ConfigInvalid(cls.name, exc.messages) from exc
    ctx = make_context(input, allowed_private_networks=allowed_private_networks, **context)
    return cls().run(loaded, ctx)


# --- internals -------------------------------------------------------------------------------


def _key(run_id: int, node_id: str, attempt: int) -> str:
    return hashlib.sha256(f"{run_id}:{node_id}:{attempt}".encode()).hexdigest()


def _resolve(connector: type[Connector] | str) -> tuple[type[Connector], ConnectorSpec, dict[str, Any]]:
    from hub.plugins import get_registry, load_registry

    if isinstance(connector, str):
        info = get_registry().get(connector)
        if info is None:
            raise LookupError(f'connector "{connector}" is not installed')
        return info.cls, info.spec, info.permissions
    if not (isinstance(connector, type) and issubclass(connector, Connector)):
        raise TypeError(f"{connector!r} is not a hub.sdk.Connector subclass")

    @hookimpl
    def hookhub_connectors() -> list[type[Connector]]:
        return [connector]

    plugin = types.ModuleType(f"hookhub_testing.{connector.name}")
    plugin.hookhub_connectors = hookhub_connectors  # type: ignore[attr-defined]
    registry = load_registry(extra_plugins=[plugin], entry_points=False)
    info = registry.connectors.get(connector.name)
    if info is None or info.cls is not connector:
        problems = "; ".join(str(p) for p in registry.problems) or "not registered"
        raise TypeError(f"{connector.__qualname__} cannot be run by the hub: {problems}")
    return info.cls, info.spec, info.permissions


_sandboxes: dict[tuple[str, str], Any] = {}
_lock = threading.Lock()


def _sandbox(kind: str, cls: type[Connector]) -> Any:
    """One sandbox per kind (and, for Python, per connector module), kept for the test session."""
    key = (kind, cls.__module__ if kind == "python" else "")
    with _lock:
        box = _sandboxes.get(key)
        if box is None:
            if kind == "python":
                from sandbox.process import ProcessSandbox

                box = ProcessSandbox(preload=[cls.__module__], slots=2, uid_base=62000)
            elif kind == "wasm":
                from connectors._code_runtime import HubWasmSandbox

                box = HubWasmSandbox(_wasm_cache_dir())
            else:
                raise ValueError(f"run_connector cannot run sandbox kind {kind!r}")
            _sandboxes[key] = box
        return box


def _wasm_cache_dir() -> str:
    """Shared across test sessions on this machine, so CPython for WASM (the ``code`` connector) is
    compiled once, not per session; ``HOOKHUB_TEST_WASM_CACHE`` moves it."""
    default = os.path.join(tempfile.gettempdir(), f"hookhub-test-wasm-cache-{os.getuid()}")
    return os.environ.get("HOOKHUB_TEST_WASM_CACHE", default)


@atexit.register
def close_sandboxes() -> None:
    """Stop the sandboxes :func:`run_connector` started (also runs at exit)."""
    with _lock:
        boxes = list(_sandboxes.values())
        _sandboxes.clear()
    for box in boxes:
        box.close()
