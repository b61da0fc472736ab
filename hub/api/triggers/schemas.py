from __future__ import annotations

import zoneinfo

from croniter import croniter
from limits import parse as parse_limit
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from hub.api.pagination import PageArgs, envelope

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
    username = fields.String(metadata={"description": "basic: the expected user name (the secret is the password)"})
    tolerance_seconds = fields.Integer(validate=validate.Range(min=1, max=86400),
                                       metadata={"description": "timestamped schemes: accepted clock skew "
                                                                "(default 300)"})
    secret_ref = fields.String(validate=validate.Length(min=1, max=128),
                               metadata={"description": "use the workspace secret of this name instead of `secret`"})
    timestamp_header = fields.String(metadata={"description": "hmac: a header with a Unix timestamp; the signed "
                                                              "text is then `<timestamp><separator><body>`"})
    timestamp_separator = fields.String(validate=validate.Length(max=8),
                                        metadata={"description": "hmac: default '.'"})


class DedupeSchema(Schema):
    class Meta:
        unknown = RAISE

    header = fields.String(metadata={"description": "the header carrying the delivery id"})
    json_path = fields.String(metadata={"description": "where the delivery id is in the body, e.g. `data.id`"})
    enabled = fields.Boolean(metadata={"description": "false turns deduplication off (also a preset's default)"})
    retention_seconds = fields.Integer(validate=validate.Range(min=1, max=90 * 86400),
                                       metadata={"description": "how long a delivery id is remembered "
                                                                "(default 7 days)"})

    @validates_schema
    def _one(self, data, **kwargs):
        if data.get("header") and data.get("json_path"):
            raise ValidationError("give at most one of header or json_path")


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
    rate_limit = fields.String(metadata={"example": "100/minute",
                                         "description": "at most this many deliveries (`N/second|minute|hour|day`); "
                                                        "more get 429 with Retry-After"})
    # schedule
    cron = fields.String(metadata={"example": "*/5 * * * *"})
    timezone = fields.String(metadata={"example": "Europe/Berlin"})
    payload = fields.Raw()
    misfire = fields.String(validate=validate.OneOf(["skip", "catch_up"]),
                            metadata={"description": "slots missed while no scheduler ran: `skip` them (default) "
                                                     "or `catch_up` with one run for the latest"})
    misfire_grace_seconds = fields.Integer(validate=validate.Range(min=1, max=86400),
                                           metadata={"description": "a slot later than this is a misfire "
                                                                    "(default 60)"})

    @validates_schema
    def _per_type(self, data, partial=False, **kwargs):
        kind = data.get("type")
        webhook_only = {"verify", "dedupe", "response", "sync_timeout_seconds", "max_body_bytes", "methods",
                        "rate_limit"}
        schedule_only = {"cron", "timezone", "payload", "misfire", "misfire_grace_seconds"}
        errors: dict[str, list[str]] = {}
        wrong = schedule_only if kind == "webhook" else webhook_only if kind == "schedule" else set()
        for key in sorted(wrong & set(data)):
            errors[key] = [f"not a setting of {kind} triggers"]
        if data.get("rate_limit"):
            try:
                parse_limit(data["rate_limit"])
            except ValueError:
                errors["rate_limit"] = [f"not a rate such as '100/minute': {data['rate_limit']!r}"]
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
    next_fire_times = fields.List(fields.String(), metadata={
        "description": "schedule: the next slots (UTC, ISO 8601), computed in the trigger's time zone"})
    previous_url_expires_at = fields.String(metadata={
        "description": "webhook: after a token rotation, when the previous URL stops working"})
    secret = fields.String(metadata={"description": "only in the answer of a secret rotation that generated it"})
    created_at = fields.String()
    updated_at = fields.String()


TriggerPageSchema = envelope(TriggerSchema)


class RotateSchema(Schema):
    class Meta:
        unknown = RAISE

    what = fields.String(required=True, validate=validate.OneOf(["token", "secret"]))
    overlap_seconds = fields.Integer(load_default=86400, validate=validate.Range(min=0, max=30 * 86400),
                                     metadata={"description": "how long the previous token or secret is still "
                                                              "accepted (default 1 day)"})
    secret = fields.String(validate=validate.Length(min=1, max=4096), metadata={
        "description": "secret: the new secret (e.g. one the provider generated); omitted, one is generated "
                       "and shown once"})


class DeliveryArgs(PageArgs):
    status = fields.String(validate=validate.OneOf(["accepted", "duplicate", "rejected"]))


class DeliverySchema(Schema):
    id = fields.Integer()
    trigger_id = fields.Integer()
    received_at = fields.String()
    method = fields.String()
    status = fields.String(metadata={"description": "accepted | duplicate | rejected"})
    status_code = fields.Integer(allow_none=True, metadata={"description": "what the sender was answered"})
    error = fields.String(allow_none=True)
    dedupe_key = fields.String(allow_none=True)
    run_id = fields.Integer(allow_none=True)
    headers = fields.Dict(metadata={"description": "credentials replaced by ***"})
    query = fields.Dict()
    content_type = fields.String(allow_none=True)
    body = fields.String(allow_none=True, metadata={"description": "the raw body (text, or base64 per "
                                                                   "`body_encoding`)"})
    body_encoding = fields.String(metadata={"description": "utf-8 | base64"})
    body_bytes = fields.Integer()


DeliveryPageSchema = envelope(DeliverySchema)
