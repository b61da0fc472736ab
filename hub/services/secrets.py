"""Workspace secrets: encrypted at rest under HOOKHUB_SECRET_KEY, values write-only.

Only the runtime decrypts (``hub.runtime.LazySecrets``, for the nodes whose templates reference a
secret); nothing here ever returns a value.
"""

from __future__ import annotations

import peewee

from hub.api.errors import ApiError
from hub.crypto import SecretBox
from hub.db import write_transaction
from hub.models import Secret, utcnow


def get_secret(workspace_id: int, name: str) -> Secret:
    row = Secret.get_or_none((Secret.workspace == workspace_id) & (Secret.name == name))
    if row is None:
        raise ApiError(404, "secret_not_found", f"no secret named {name}")
    return row


def create_secret(workspace_id: int, name: str, value: str, box: SecretBox) -> Secret:
    try:
        with write_transaction():
            return Secret.create(workspace=workspace_id, name=name, ciphertext=box.encrypt(value))
    except peewee.IntegrityError:
        raise ApiError(409, "secret_exists",
                       f"a secret named {name} already exists; rotate it with PUT /api/v1/secrets/{name}") from None


def rotate_secret(workspace_id: int, name: str, value: str, box: SecretBox) -> Secret:
    """Replace a secret's value. Nodes rendered before keep the value they read; later ones read the new."""
    with write_transaction():
        updated = Secret.update(ciphertext=box.encrypt(value), updated_at=utcnow()).where(
            (Secret.workspace == workspace_id) & (Secret.name == name)).execute()
        if not updated:
            raise ApiError(404, "secret_not_found", f"no secret named {name}; create it with POST /api/v1/secrets")
        return get_secret(workspace_id, name)


def delete_secret(workspace_id: int, name: str) -> None:
    with write_transaction():
        get_secret(workspace_id, name).delete_instance()
