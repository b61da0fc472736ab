from marshmallow import Schema, fields

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
