from marshmallow import Schema, fields, validate

from hub.api.pagination import PageArgs, envelope


class UserInSchema(Schema):
    email = fields.Email(required=True, metadata={"example": "dev@example.com"})
    password = fields.String(required=True, load_only=True, validate=validate.Length(min=8, max=256),
                             metadata={"example": "a long passphrase"})
    is_admin = fields.Boolean(load_default=False, metadata={"description": "a hub administrator"})


class UserPatchSchema(Schema):
    is_admin = fields.Boolean()
    is_active = fields.Boolean(metadata={"description": "false: the user can no longer log in; sessions end"})
    password = fields.String(load_only=True, validate=validate.Length(min=8, max=256))


class UserAdminSchema(Schema):
    id = fields.Integer(metadata={"example": 2})
    email = fields.String(metadata={"example": "dev@example.com"})
    is_admin = fields.Boolean()
    is_active = fields.Boolean()
    created_at = fields.String(metadata={"example": "2025-01-01T12:00:00.000Z"})


UserPageSchema = envelope(UserAdminSchema)
UserListArgs = PageArgs
