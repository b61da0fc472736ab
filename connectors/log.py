"""The built-in ``log`` connector: write a message to the run's event log.

The runtime turns what a connector writes through ``ctx.log`` into ``node.log`` events of the run
(shown by ``hookhub runs watch``, the run viewer and ``GET /api/v1/runs/{id}/events``). The message
is rendered like any config value, so ``"order {{ trigger.body.id }} paid"`` works. The output is
``{message, level}`` (plus ``data`` when given), so later nodes can use it too.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from marshmallow import fields, validate

from hub.sdk import Connector, Context, hookimpl

__all__ = ["Log", "hookhub_connectors"]

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
MAX_MESSAGE_CHARS = 2000


class Log(Connector):
    """Write a message to the run's event log."""

    name = "log"
    version = "1.0.0"
    description = "Write a message (and optional data) to the run's event log."
    permissions = {"network": False}

    class Config(Connector.Config):
        message = fields.Raw(required=True, metadata={"description": "Text (any JSON value is written as JSON)."})
        level = fields.String(load_default="info", validate=validate.OneOf(list(LEVELS)))
        data = fields.Raw(allow_none=True, metadata={"description": "A JSON value logged after the message."})

    def run(self, config: dict[str, Any], ctx: Context) -> dict[str, Any]:
        cfg = config
        message = cfg["message"] if isinstance(cfg["message"], str) else json.dumps(cfg["message"])
        line = message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 1] + "…"
        if "data" in cfg:
            line += " " + json.dumps(cfg["data"], sort_keys=True, default=str)[:MAX_MESSAGE_CHARS]
        ctx.log.log(LEVELS[cfg["level"]], "%s", line)
        out: dict[str, Any] = {"message": message, "level": cfg["level"]}
        if "data" in cfg:
            out["data"] = cfg["data"]
        return out


@hookimpl
def hookhub_connectors() -> list[type[Connector]]:
    return [Log]
