from marshmallow import Schema, fields, validate

from hub.api.pagination import PageArgs, envelope
from hub.engine import RunStatus


class RunSchema(Schema):
    id = fields.Integer()
    flow_id = fields.Integer()
    flow_version = fields.Integer()
    trigger_id = fields.Integer(allow_none=True)
    source = fields.String(metadata={"example": "webhook"})
    status = fields.String(metadata={"example": "running"})
    error = fields.String(allow_none=True)
    created_at = fields.String()
    finished_at = fields.String(allow_none=True)


class AttemptSchema(Schema):
    number = fields.Integer()
    status = fields.String()
    key = fields.String(metadata={"description": "sha256(run:node:attempt), unique"})
    worker = fields.String(allow_none=True, metadata={"description": "host:pid of the worker that claimed it"})
    error = fields.Raw(allow_none=True)
    started_at = fields.String(allow_none=True)
    finished_at = fields.String(allow_none=True)
    duration_ms = fields.Float(allow_none=True)


class NodeStateSchema(Schema):
    id = fields.String()
    status = fields.String()
    attempts = fields.Integer()
    output = fields.Raw(allow_none=True)
    error = fields.Raw(allow_none=True)
    next_attempt_at = fields.String(allow_none=True)
    started_at = fields.String(allow_none=True)
    finished_at = fields.String(allow_none=True)
    attempt_history = fields.List(fields.Nested(AttemptSchema))


class RunDetailSchema(RunSchema):
    output = fields.Raw(allow_none=True)
    trigger = fields.Raw()
    nodes = fields.List(fields.Nested(NodeStateSchema))


class RunListArgs(PageArgs):
    flow_id = fields.Integer()
    status = fields.String(validate=validate.OneOf([s.value for s in RunStatus]))


RunPageSchema = envelope(RunSchema)


class RetryRequestSchema(Schema):
    nodes = fields.List(fields.String(validate=validate.Length(min=1, max=64)), validate=validate.Length(min=1),
                        metadata={"description": "retry only these failed or cancelled nodes (default: all)"})
