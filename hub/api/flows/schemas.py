from marshmallow import Schema, fields, validate

from hub.api.pagination import PageArgs, envelope


class FlowSchema(Schema):
    id = fields.Integer()
    name = fields.String()
    version = fields.Integer(metadata={"description": "the latest version"})
    document = fields.Dict(metadata={"description": "the flow document of that version (SPEC §3)"})
    created_at = fields.String()
    updated_at = fields.String()


class FlowVersionSchema(Schema):
    version = fields.Integer()
    document = fields.Dict()
    created_at = fields.String()


class FlowListArgs(PageArgs):
    name = fields.String()


class ValidationResultSchema(Schema):
    valid = fields.Boolean()
    problems = fields.List(fields.Dict())


class RunRequestSchema(Schema):
    payload = fields.Raw(load_default=dict, metadata={"description": "becomes trigger.body"})
    version = fields.Integer(load_default=None, metadata={"description": "run this version instead of the latest"})


FlowPageSchema = envelope(FlowSchema)
FlowVersionPageSchema = envelope(FlowVersionSchema)

FLOW_BODY_DOC = {
    "requestBody": {
        "required": True,
        "description": "A flow document (SPEC §3), as JSON or YAML",
        "content": {
            "application/json": {"schema": {"type": "object"}, "example": {
                "name": "hello", "nodes": [{"id": "get", "connector": "http",
                                            "config": {"url": "https://example.com"}}]}},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}


# --- security/management (issue #7): duplicate, export, import, stats -------------------------------


class DuplicateSchema(Schema):
    name = fields.String(load_default=None, validate=validate.Length(min=1, max=200),
                         metadata={"description": 'the copy\'s name (default: "NAME (copy)")', "example": "hello-v2"})


class ExportArgs(Schema):
    version = fields.Integer(load_default=None, validate=validate.Range(min=1),
                             metadata={"description": "export this version instead of the latest"})


class ImportArgs(Schema):
    replace = fields.Boolean(load_default=False, metadata={
        "description": "a flow of the same name gets the document as its new version instead of a 409"})


class StatusCountsSchema(Schema):
    total = fields.Integer(metadata={"example": 12})
    by_status = fields.Dict(keys=fields.String(), values=fields.Integer(),
                            metadata={"example": {"succeeded": 10, "failed": 2}})


class DurationsSchema(Schema):
    count = fields.Integer(metadata={"description": "finished runs measured", "example": 12})
    min_ms = fields.Float(allow_none=True, metadata={"example": 120.5})
    mean_ms = fields.Float(allow_none=True, metadata={"example": 340.0})
    p50_ms = fields.Float(allow_none=True, metadata={"example": 300.1})
    p95_ms = fields.Float(allow_none=True, metadata={"example": 910.0})
    max_ms = fields.Float(allow_none=True, metadata={"example": 1200.0})


class FlowStatsSchema(Schema):
    flow_id = fields.Integer(metadata={"example": 1})
    runs = fields.Nested(StatusCountsSchema)
    durations = fields.Nested(DurationsSchema, metadata={
        "description": "run durations (created → finished) of the most recent finished runs (at most 10000)"})
    last_run_at = fields.String(allow_none=True, metadata={"example": "2025-01-01T12:00:00.000Z"})
