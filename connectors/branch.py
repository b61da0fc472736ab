"""The built-in ``branch`` connector: decide which way a flow goes.

Each branch has a ``name`` and a ``when`` condition, usually a template the runtime renders before
the connector runs (``when: "{{ trigger.body.amount > 100 }}"`` arrives as ``true`` or ``false``).
The output names the first branch whose condition holds (or ``default``), and lists all that hold::

    nodes:
      - id: route
        connector: branch
        config:
          branches:
            - {name: big, when: "{{ trigger.body.amount > 100 }}"}
            - {name: eu, when: "{{ trigger.body.country in ['DE', 'FR'] }}"}
          default: small
    edges:
      - {from: route, to: alert, when: "{{ nodes.route.output.branch == 'big' }}"}
      - {from: route, to: file, when: "{{ 'eu' in nodes.route.output.matched }}"}

A condition must come out as a boolean (or null/number, or the strings "true"/"false"): any other
string means it was not one whole ``{{ }}`` expression, which is an error rather than a guess.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates

from hub.sdk import Connector, ConnectorError, Context, hookimpl

__all__ = ["Branch", "hookhub_connectors"]


class BranchSchema(Schema):
    class Meta:
        unknown = "raise"

    name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    when = fields.Raw(required=True, allow_none=True, metadata={"description": "A condition, e.g. {{ x > 1 }}."})


class Branch(Connector):
    """Pick a branch: output the first condition that holds."""

    name = "branch"
    version = "1.0.0"
    description = "Evaluate conditions; output {branch, matched} for edge `when` expressions."
    permissions = {"network": False}

    class Config(Connector.Config):
        branches = fields.List(fields.Nested(BranchSchema), required=True, validate=validate.Length(min=1))
        default = fields.String(
            load_default=None, allow_none=True, metadata={"description": "The branch when none holds."}
        )

        @validates("branches")
        def _unique(self, value: list[dict[str, Any]], **_: Any) -> None:
            names = [b["name"] for b in value]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValidationError(f"Branch names must be unique: {', '.join(dupes)}.")

    def run(self, config: dict[str, Any], ctx: Context) -> dict[str, Any]:
        cfg = config
        matched = [b["name"] for b in cfg["branches"] if _condition(b["name"], b["when"])]
        branch = matched[0] if matched else cfg["default"]
        ctx.log.info("branch %s", branch if branch is not None else "(none)")
        return {"branch": branch, "matched": matched}


def _condition(name: str, value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float)):
        return bool(value)
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "false"):
            return low == "true"
        raise ConnectorError(
            f"branch {name!r}: the condition came out as the text {value[:100]!r}, not a boolean; write the "
            "whole condition inside one {{ }}, e.g. \"{{ trigger.body.amount > 100 }}\""
        )
    raise ConnectorError(f"branch {name!r}: the condition came out as {type(value).__name__}, not a boolean")


@hookimpl
def hookhub_connectors() -> list[type[Connector]]:
    return [Branch]
