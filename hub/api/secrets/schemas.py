from marshmallow import Schema, fields, validate

from hub.api.pagination import PageArgs, envelope

NAME = validate.Regexp(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$",
                       error="letters, digits and _, not starting with a digit, at most 128")
VALUE = validate.Length(min=1, max=65536)


class SecretInSchema(Schema):
    name = fields.String(required=True, validate=NAME, metadata={"example": "EXAMPLE_TOKEN"})
    value = fields.String(required=True, load_only=True, validate=VALUE,
                          metadata={"description": "write-only: never returned", "example": "s3cr3t-value"})


class SecretValueSchema(Schema):
    value = fields.String(required=True, load_only=True, validate=VALUE,
                          metadata={"description": "the new value (write-only)", "example": "n3w-s3cr3t"})


class SecretSchema(Schema):
    name = fields.String(metadata={"example": "EXAMPLE_TOKEN"})
    created_at = fields.String(metadata={"example": "2025-01-01T12:00:00.000Z"})
    updated_at = fields.String(metadata={"description": "when the value was last set (rotated)",
                                         "example": "2025-01-02T12:00:00.000Z"})


SecretPageSchema = envelope(SecretSchema)
SecretListArgs = PageArgs
