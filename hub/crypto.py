"""Encryption of secrets at rest and hashing of tokens, all derived from HOOKHUB_SECRET_KEY."""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["SecretBox", "sha256_hex"]


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class SecretBox:
    """Fernet (AES-128-CBC + HMAC) under a key derived from the hub's secret key with HKDF."""

    def __init__(self, secret_key: str) -> None:
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"hookhub secrets v1").derive(
            secret_key.encode()
        )
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken:
            raise ValueError("secret cannot be decrypted with the current HOOKHUB_SECRET_KEY") from None
