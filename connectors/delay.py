"""The built-in ``delay`` connector: wait a number of seconds, then pass the input on.

The wait happens inside the attempt, so it is bounded by the node's ``timeout_seconds`` (and holds a
worker slot while it lasts): it is meant for short pauses — a rate limit, letting a replica catch
up. A delay at or past the timeout fails the attempt as a timeout (the sandbox stops it). For long
waits (minutes or more) use a node's retry backoff (raise a retryable error, or let
``http`` honour ``Retry-After``) or a schedule trigger, which hold no worker while they wait.
"""

from __future__ import annotations

import time
from typing import Any

from marshmallow import fields, validate

from hub.sdk import Connector, Context, hookimpl

__all__ = ["Delay", "hookhub_connectors"]

MAX_SECONDS = 3600


class Delay(Connector):
    """Wait, then output the node's input."""

    name = "delay"
    version = "1.0.0"
    description = "Wait N seconds (bounded by the node's timeout), then output the node's input."
    permissions = {"network": False}

    class Config(Connector.Config):
        seconds = fields.Float(
            required=True,
            validate=validate.Range(min=0, max=MAX_SECONDS),
            metadata={"description": "How long to wait; must be less than the node's timeout_seconds."},
        )

    def run(self, config: dict[str, Any], ctx: Context) -> Any:
        seconds = config["seconds"]
        ctx.log.info("waiting %g s", seconds)
        time.sleep(seconds)
        return {"waited_seconds": seconds, "input": ctx.input}


@hookimpl
def hookhub_connectors() -> list[type[Connector]]:
    return [Delay]
