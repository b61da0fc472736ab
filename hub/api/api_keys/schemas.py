from marshmallow import Schema, fields, validate

from hub.api.pagination import PageArgs, envelope

SCOPES = ("read", "write", "admin")


class ApiKeyInSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200),
                         metadata={"example": "ci deploys"})
    scopes = fields.List(fields.String(validate=validate.OneOf(SCOPES)), required=True,
                         validate=validate.Length(min=1, max=3),
                         metadata={"description": "read → viewer, write → editor, admin → admin; "
                                                  "never more than your own role", "example": ["read", "write"]})


class ApiKeySchema(Schema):
    id = fields.Integer(metadata={"example": 1})
    name = fields.String(metadata={"example": "ci deploys"})
    prefix = fields.String(metadata={"description": "the key's visible beginning, to recognise it",
                                     "example": "hh_1a2b3c4d"})
    scopes = fields.List(fields.String(), metadata={"example": ["read", "write"]})
    workspace_id = fields.Integer()
    user_id = fields.Integer(metadata={"description": "who created it"})
    created_at = fields.String(metadata={"example": "2025-01-01T12:00:00.000Z"})
    last_used_at = fields.String(allow_none=True)
    revoked_at = fields.String(allow_none=True)


class ApiKeyCreatedSchema(ApiKeySchema):
    key = fields.String(metadata={"description": "the key itself; shown only in this answer",
                                  "example": "hh_1a2b3c4d_Zm9vYmFyYmF6cXV4cXV1eGZvb2Jhcg"})


class ApiKeyListArgs(PageArgs):
    include_revoked = fields.Boolean(load_default=False)


ApiKeyPageSchema = envelope(ApiKeySchema)
