"""Registers ``echo.wasm`` as the ``wasm-echo`` connector.

A WASM connector is declared by a :class:`hub.sdk.Connector` subclass like any other, with
``sandbox = "wasm"`` and ``wasm_module`` naming the WASI module. Nothing in ``run`` executes: the
hub runs the module in its WASM sandbox, which hands it ``{"config", "input", "context"}`` on stdin.
The ``Config`` schema is still what flows are validated against and what ``GET /api/v1/connectors``
publishes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from marshmallow import fields

from hub.sdk import Connector, ConnectorError, Context, hookimpl

MODULE = Path(__file__).resolve().with_name("echo.wasm")


class WasmEcho(Connector):
    """Echo the node's input back as its output."""

    name = "wasm-echo"
    version = "1.0.0"
    description = "Echo the node's input (a WASM module written in C)."
    permissions = {"network": False}  # WASI preview 1 has no sockets anyway
    sandbox = "wasm"
    wasm_module = str(MODULE)

    class Config(Connector.Config):
        fail = fields.Boolean(load_default=False, metadata={"description": "Answer a retryable error instead."})

    def run(self, config: dict[str, Any], ctx: Context) -> Any:
        raise ConnectorError("wasm-echo runs in the WASM sandbox")


@hookimpl
def hookhub_connectors() -> list[type[Connector]]:
    return [WasmEcho]
