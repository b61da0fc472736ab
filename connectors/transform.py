"""``transform``: build a JSON value from templates (the runtime renders ``value`` before the sandbox)."""

from __future__ import annotations

from typing import Any

from marshmallow import fields

from hub.sdk import Connector, Context, hookimpl


class Transform(Connector):
    name = "transform"
    version = "1.0.0"
    description = "Build a JSON value from templates: its output is the rendered `value`"
    permissions = {"network": False}

    class Config(Connector.Config):
        value = fields.Raw(required=True, allow_none=True,
                           metadata={"description": "any JSON; strings may hold {{ templates }}"})

    def run(self, config: dict[str, Any], ctx: Context) -> Any:
        return config["value"]


@hookimpl
def hookhub_connectors():
    return [Transform]
