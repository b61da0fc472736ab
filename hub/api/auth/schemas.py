from marshmallow import Schema, fields, validate


class RegisterSchema(Schema):
    email = fields.Email(required=True, metadata={"example": "ops@example.com"})
    password = fields.String(required=True, load_only=True, validate=validate.Length(min=8, max=256))


class LoginSchema(Schema):
    email = fields.String(required=True, metadata={"example": "ops@example.com"})
    password = fields.String(required=True, load_only=True)


class RefreshSchema(Schema):
    refresh_token = fields.String(required=True)


class LogoutSchema(Schema):
    refresh_token = fields.String(load_default=None)


class TokenSchema(Schema):
    access_token = fields.String()
    refresh_token = fields.String()
    token_type = fields.String(metadata={"example": "Bearer"})
    expires_in = fields.Integer(metadata={"example": 900})


class UserSchema(Schema):
    id = fields.Integer()
    email = fields.String()
    is_admin = fields.Boolean()
    workspace_id = fields.Integer()
    role = fields.String()
