"""A trivial Python connector for the sandbox benchmark: what a subprocess attempt costs by itself."""

from __future__ import annotations

from typing import Any

from marshmallow import fields

from hub.sdk import Connector, Context


class Identity(Connector):
    name = "bench-identity"
    version = "1.0.0"
    description = "Answer config.value"
    permissions = {"network": False}

    class Config(Connector.Config):
        value = fields.Raw(required=True, allow_none=True)

    def run(self, config: dict[str, Any], ctx: Context) -> Any:
        return config["value"]
