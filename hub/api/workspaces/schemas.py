from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from hub.api.pagination import PageArgs, envelope

ROLE = validate.OneOf(("viewer", "editor", "admin"))


class WorkspaceInSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200), metadata={"example": "payments"})


class WorkspaceSchema(Schema):
    id = fields.Integer(metadata={"example": 2})
    name = fields.String(metadata={"example": "payments"})
    role = fields.String(metadata={"description": "your role in it", "example": "admin"})
    created_at = fields.String(metadata={"example": "2025-01-01T12:00:00.000Z"})


class MemberInSchema(Schema):
    user_id = fields.Integer(validate=validate.Range(min=1), metadata={"example": 3})
    email = fields.Email(metadata={"example": "dev@example.com"})
    role = fields.String(required=True, validate=ROLE, metadata={"example": "editor"})

    @validates_schema
    def _one_of(self, data, **kwargs):
        if ("user_id" in data) == ("email" in data):
            raise ValidationError("give exactly one of user_id or email", "user_id")


class RoleSchema(Schema):
    role = fields.String(required=True, validate=ROLE, metadata={"example": "viewer"})


class MemberSchema(Schema):
    user_id = fields.Integer(metadata={"example": 3})
    email = fields.String(metadata={"example": "dev@example.com"})
    role = fields.String(metadata={"example": "editor"})


WorkspacePageSchema = envelope(WorkspaceSchema)
MemberPageSchema = envelope(MemberSchema)
WorkspaceListArgs = PageArgs
