from marshmallow import Schema, fields, validate

from hub.api.pagination import PageArgs, envelope


class DeadLetterSchema(Schema):
    id = fields.Integer()
    flow_id = fields.Integer()
    run_id = fields.Integer()
    node_id = fields.String()
    attempts = fields.Integer(metadata={"description": "attempts the node had used when it gave up"})
    error = fields.Raw(allow_none=True, metadata={"description": "the last attempt's error"})
    status = fields.String(metadata={"description": "open | redriven", "example": "open"})
    created_at = fields.String()
    redriven_at = fields.String(allow_none=True)


class DeadLetterListArgs(PageArgs):
    status = fields.String(validate=validate.OneOf(["open", "redriven"]))
    flow_id = fields.Integer()
    run_id = fields.Integer()


DeadLetterPageSchema = envelope(DeadLetterSchema)
