"""The built-in ``code`` connector: a user's Python snippet, run by CPython compiled to WebAssembly.

The snippet reads ``input`` (the rendered ``input`` config value, or the node's input when the
config has none) and sets ``output``, which must be JSON-serialisable. ``print()`` goes to the
node's log. It runs in the WASM sandbox — no files but the standard library, no network, no host
calls — under the node's timeout and memory limit::

    - id: score
      connector: code
      config:
        input: "{{ nodes.fetch.output.body }}"
        code: |
          output = {"total": sum(item["price"] for item in input["items"])}

Syntax errors are reported when the node runs, with the line number (the guest's CPython is newer
than the hub's, so the hub's parser cannot judge the snippet). This class only declares the
connector (name, schema, sandbox); the sandbox side is
:class:`connectors._code_runtime.HubWasmSandbox`, which recognises :data:`CODE_MODULE`.
"""

from __future__ import annotations

from typing import Any

from marshmallow import fields, validate

from connectors._code_runtime import CODE_MODULE
from hub.sdk import Connector, ConnectorError, Context, hookimpl

__all__ = ["Code", "hookhub_connectors"]

MAX_CODE_CHARS = 256 * 1024


class Code(Connector):
    """Run a Python snippet in the WASM sandbox."""

    name = "code"
    version = "1.0.0"
    description = "Run a Python snippet in the WASM sandbox: it reads `input` and sets `output`."
    permissions = {"network": False}
    sandbox = "wasm"
    wasm_module = CODE_MODULE

    class Config(Connector.Config):
        code = fields.String(
            required=True,
            validate=validate.Length(min=1, max=MAX_CODE_CHARS),
            metadata={"description": "Python source; reads `input`, sets `output` (JSON)."},
        )
        input = fields.Raw(
            allow_none=True,
            metadata={"description": "The value bound to `input` (default: the node's input)."},
        )

    def run(self, config: dict[str, Any], ctx: Context) -> Any:
        raise ConnectorError("the code connector runs in the WASM sandbox, not as a Python connector")


@hookimpl
def hookhub_connectors() -> list[type[Connector]]:
    return [Code]
