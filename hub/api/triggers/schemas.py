from __future__ import annotations

import zoneinfo

from croniter import croniter
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from hub.api.pagination import envelope

VERIFY_SCHEMES = ("github", "stripe", "slack", "standard-webhooks", "hmac", "header", "basic")


class VerifySchema(Schema):
    class Meta:
        unknown = RAISE

    scheme = fields.String(required=True, validate=validate.OneOf(VERIFY_SCHEMES))
    secret = fields.String(load_only=True, validate=validate.Length(min=1, max=4096),
                           metadata={"description": "write-only"})
    header = fields.String(metadata={"description": "hmac/header: the header carrying the signature or secret"})
    algorithm = fields.String(validate=validate.OneOf(["sha1", "sha256", "sha512"]))
    encoding = fields.String(validate=validate.OneOf(["hex", "base64"]))
    prefix = fields.String(metadata={"description": "hmac: text before the signature, e.g. 'sha256='"})
    username = fields.String()
    tolerance_seconds = fields.Integer(validate=validate.Range(min=1, max=86400))


class DedupeSchema(Schema):
    class Meta:
        unknown = RAISE

    header = fields.String()
    json_path = fields.String()

    @validates_schema
    def _one(self, data, **kwargs):
        if bool(data.get("header")) == bool(data.get("json_path")):
            raise ValidationError("give exactly one of header or json_path")


class TriggerInSchema(Schema):
    class Meta:
        unknown = RAISE

    type = fields.String(required=True, validate=validate.OneOf(["webhook", "schedule"]))
    enabled = fields.Boolean(load_default=True)
    flow_version = fields.Integer(load_default=None, allow_none=True,
                                  metadata={"description": "pin a version; null follows the latest"})
    # webhook
    verify = fields.Nested(VerifySchema, allow_none=True)
    dedupe = fields.Nested(DedupeSchema, allow_none=True)
    response = fields.String(validate=validate.OneOf(["async", "sync"]))
    sync_timeout_seconds = fields.Float(validate=validate.Range(min=0.1, max=300))
    max_body_bytes = fields.Integer(validate=validate.Range(min=1, max=64 << 20))
    methods = fields.List(fields.String(validate=validate.OneOf(
        ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"])), validate=validate.Length(min=1))
    # schedule
    cron = fields.String(metadata={"example": "*/5 * * * *"})
    timezone = fields.String(metadata={"example": "Europe/Berlin"})
    payload = fields.Raw()

    @validates_schema
    def _per_type(self, data, partial=False, **kwargs):
        kind = data.get("type")
        webhook_only = {"verify", "dedupe", "response", "sync_timeout_seconds", "max_body_bytes", "methods"}
        schedule_only = {"cron", "timezone", "payload"}
        errors: dict[str, list[str]] = {}
        wrong = schedule_only if kind == "webhook" else webhook_only if kind == "schedule" else set()
        for key in sorted(wrong & set(data)):
            errors[key] = [f"not a setting of {kind} triggers"]
        if kind == "schedule":
            cron = data.get("cron")
            if not cron and not partial:
                errors["cron"] = ["required for schedule triggers"]
            elif cron and not croniter.is_valid(cron):
                errors["cron"] = [f"not a valid cron expression: {cron!r}"]
            tz = data.get("timezone")
            if tz:
                try:
                    zoneinfo.ZoneInfo(tz)
                except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                    errors["timezone"] = [f"unknown IANA time zone: {tz!r}"]
        if errors:
            raise ValidationError(errors)


class TriggerPatchSchema(TriggerInSchema):
    """PUT body: any subset of the trigger settings."""


class TriggerSchema(Schema):
    id = fields.Integer()
    flow_id = fields.Integer()
    type = fields.String()
    enabled = fields.Boolean()
    flow_version = fields.Integer(allow_none=True)
    url = fields.String(metadata={"description": "webhook: the public URL to send deliveries to"})
    config = fields.Dict(metadata={"description": "the trigger's settings (secrets left out)"})
    created_at = fields.String()
    updated_at = fields.String()


TriggerPageSchema = envelope(TriggerSchema)
