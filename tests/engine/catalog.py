"""A connector catalog for tests, with marshmallow schemas like real connectors have."""

from __future__ import annotations

from marshmallow import RAISE, Schema, ValidationError, fields, validate


class _Smtp(Schema):
    host = fields.String(required=True)
    port = fields.Integer()


class HttpConfig(Schema):
    class Meta:
        unknown = RAISE

    method = fields.String(validate=validate.OneOf(["GET", "POST", "PUT", "DELETE"]))
    url = fields.Url(required=True)
    headers = fields.Dict(keys=fields.String(), values=fields.String())
    timeout_seconds = fields.Integer()
    json = fields.Raw()


class EmailConfig(Schema):
    to = fields.List(fields.Email(), required=True)
    subject = fields.String()
    text = fields.String()
    smtp = fields.Nested(_Smtp)


class NoopConfig(Schema):
    class Meta:
        unknown = RAISE

    value = fields.Raw()


SCHEMAS = {"http": HttpConfig, "email": EmailConfig, "noop": NoopConfig}


class FakeCatalog:
    """Knows http, email and noop; a "@N" pin is accepted for any known name."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def exists(self, name: str) -> bool:
        self.seen.append(name)
        return name.split("@", 1)[0] in SCHEMAS

    def validate_config(self, name: str, config: dict) -> dict:
        try:
            SCHEMAS[name.split("@", 1)[0]]().load(config)
        except ValidationError as exc:
            return exc.normalized_messages()
        return {}


class BrokenCatalog:
    def exists(self, name: str) -> bool:
        return True

    def validate_config(self, name: str, config: dict) -> dict:
        raise RuntimeError("schema exploded")
