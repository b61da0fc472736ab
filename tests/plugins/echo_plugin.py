"""A well-behaved third-party plugin: one connector."""

from marshmallow import fields

from hub.sdk import Connector, hookimpl


class Echo(Connector):
    """Return the input."""

    name = "echo"
    version = "2.1.0"
    permissions = {"network": False}

    class Config(Connector.Config):
        text = fields.String(required=True)
        times = fields.Integer(load_default=1)

    def run(self, config, ctx):
        return {"text": config["text"] * config.get("times", 1), "input": ctx.input}


class WasmEcho(Connector):
    name = "wasm-echo"
    version = "0.1.0"
    description = "An echo compiled to WASI"
    sandbox = "wasm"
    wasm_module = "/opt/hookhub/echo.wasm"


@hookimpl
def hookhub_connectors():
    return [Echo, WasmEcho]
