"""Logging: text for people, JSON lines for machines (``HOOKHUB_LOG_FORMAT=json|text``).

Every record carries the context it happened in: ``request_id`` (the API's request id — read from
``g.request_id`` or the ``X-Request-Id`` header, never generated here), ``run_id`` and ``node_id``
(bound by the worker while a task runs, see :func:`hub.services.live.instrument`, or by any code
with :func:`log_context`). Context lives in :mod:`contextvars`, so threads and greenlets each see
their own.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
from collections.abc import Iterator
from typing import Any

__all__ = ["JsonFormatter", "TextFormatter", "bind_context", "clear_context", "configure", "log_context"]

_run_id: contextvars.ContextVar[Any] = contextvars.ContextVar("hookhub_run_id", default=None)
_node_id: contextvars.ContextVar[Any] = contextvars.ContextVar("hookhub_node_id", default=None)

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d]%(context)s %(message)s"


def bind_context(*, run_id: Any = None, node_id: Any = None) -> None:
    _run_id.set(run_id)
    _node_id.set(node_id)


def clear_context() -> None:
    bind_context()


@contextlib.contextmanager
def log_context(*, run_id: Any = None, node_id: Any = None) -> Iterator[None]:
    tokens = (_run_id.set(run_id), _node_id.set(node_id))
    try:
        yield
    finally:
        _run_id.reset(tokens[0])
        _node_id.reset(tokens[1])


def _request_id() -> str | None:
    try:
        from flask import g, has_request_context, request
    except ImportError:  # pragma: no cover - flask is a dependency
        return None
    if not has_request_context():
        return None
    return getattr(g, "request_id", None) or request.headers.get("X-Request-Id") or None


def current_context() -> dict[str, Any]:
    ctx = {"request_id": _request_id(), "run_id": _run_id.get(), "node_id": _node_id.get()}
    return {k: v for k, v in ctx.items() if v is not None}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, pid, context ids, exception."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        doc.update(current_context())
        for key in ("request_id", "run_id", "node_id"):  # explicit extra= wins ("-" means none)
            value = record.__dict__.get(key)
            if value is not None and value != "-":
                doc[key] = value
        if record.exc_info:
            doc["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The classic line, with ``[request_id=… run_id=… node_id=…]`` when there is context."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        ctx = current_context()
        record.context = (" [" + " ".join(f"{k}={v}" for k, v in ctx.items()) + "]") if ctx else ""
        return super().format(record)


def configure(level: str = "info", fmt: str = "text") -> None:
    """Configure the root logger once per process (the CLI calls it before any command)."""
    fmt = (fmt or "text").strip().lower()
    if fmt not in FORMATS:
        raise ValueError(f"HOOKHUB_LOG_FORMAT: expected json or text, got {fmt!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
