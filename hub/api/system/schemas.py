from marshmallow import Schema, fields


class HealthSchema(Schema):
    status = fields.String(metadata={"example": "ok"})


class ReadySchema(Schema):
    status = fields.String()
    checks = fields.Dict(keys=fields.String(), values=fields.String())


class ConnectorSchema(Schema):
    name = fields.String(metadata={"example": "http"})
    version = fields.String(metadata={"example": "1.0.0"})
    description = fields.String()
    config_schema = fields.Dict(metadata={"description": "JSON schema of the node config"})
    sandbox = fields.String(metadata={"example": "subprocess"})
    permissions = fields.Dict()
    plugin = fields.String()


class PluginProblemSchema(Schema):
    plugin = fields.String()
    message = fields.String()


class ConnectorListSchema(Schema):
    items = fields.List(fields.Nested(ConnectorSchema))
    problems = fields.List(fields.Nested(PluginProblemSchema))
