"""``acme-score``: score a lead (the node's input, or ``lead``) with point rules, Acme style.

::

    - id: score
      connector: acme-score@1
      config:
        lead: "{{ trigger.body }}"
        rules:
          - {field: country, equals: DE, points: 10}
          - {field: employees, min: 50, points: 25}
        threshold: 30

Output: ``{"score": 35, "qualified": true, "matched": ["country", "employees"]}``.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from hub.sdk import Connector, ConnectorError, Context, hookimpl


class RuleSchema(Schema):
    class Meta:
        unknown = "raise"

    field = fields.String(required=True, metadata={"description": "A key of the lead."})
    equals = fields.Raw(metadata={"description": "Points when the value equals this."})
    min = fields.Float(metadata={"description": "Points when the value is a number >= this."})
    points = fields.Integer(required=True, validate=validate.Range(min=-1000, max=1000))

    @validates_schema
    def _one_test(self, data: dict[str, Any], **_: Any) -> None:
        if ("equals" in data) == ("min" in data):
            raise ValidationError("Give exactly one of equals or min.", "equals")


class AcmeScore(Connector):
    """Score a lead with point rules."""

    name = "acme-score"
    version = "1.0.0"
    description = "Score a lead with point rules; output {score, qualified, matched}."
    permissions = {"network": False}

    class Config(Connector.Config):
        lead = fields.Dict(metadata={"description": "The lead (default: the node's input)."})
        rules = fields.List(fields.Nested(RuleSchema), required=True, validate=validate.Length(min=1))
        threshold = fields.Integer(load_default=50)

    def run(self, config: dict[str, Any], ctx: Context) -> dict[str, Any]:
        lead = config.get("lead", ctx.input)
        if not isinstance(lead, dict):
            raise ConnectorError(f"acme-score: the lead must be an object, not {type(lead).__name__}")
        score, matched = 0, []
        for rule in config["rules"]:
            value = lead.get(rule["field"])
            if "equals" in rule:
                hit = value == rule["equals"]
            else:
                hit = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= rule["min"]
            if hit:
                score += rule["points"]
                matched.append(rule["field"])
        ctx.log.info("lead scored %d (threshold %d)", score, config["threshold"])
        return {"score": score, "qualified": score >= config["threshold"], "matched": matched}


@hookimpl
def hookhub_connectors() -> list[type[Connector]]:
    return [AcmeScore]
