"""``transform``: build a JSON value from templates (the runtime renders ``value`` before the sandbox).

All a transform attempt does is hand back the rendered ``value``, so it runs as a small WASI module
(``transform.wat``) in the WASM sandbox: ≈ 0.7 ms an attempt against ≈ 4–5 ms for a forked Python
process, and as sandboxed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from marshmallow import fields

from hub.sdk import Connector, ConnectorError, Context, hookimpl

MODULE = Path(__file__).resolve().with_name("transform.wat")


class Transform(Connector):
    name = "transform"
    version = "1.0.0"
    description = "Build a JSON value from templates: its output is the rendered `value`"
    permissions = {"network": False}
    sandbox = "wasm"
    wasm_module = str(MODULE)

    class Config(Connector.Config):
        value = fields.Raw(required=True, allow_none=True,
                           metadata={"description": "any JSON; strings may hold {{ templates }}"})

    def run(self, config: dict[str, Any], ctx: Context) -> Any:
        raise ConnectorError("transform runs in the WASM sandbox (transform.wat)")


@hookimpl
def hookhub_connectors():
    return [Transform]
