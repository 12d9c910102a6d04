"""Source credentials, encrypted at rest with Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``).

The key is ``settings.secret_key`` (``CDRFLOW_SECRET_KEY``); the database only ever holds the token.
``Credentials`` hides its fields from ``repr`` so a credential never reaches a log line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson
from cryptography.fernet import Fernet, InvalidToken

from services.collector.errors import SecretKeyError


@dataclass(frozen=True)
class Credentials:
    password: str | None = field(default=None, repr=False)
    private_key: str | None = field(default=None, repr=False)
    """OpenSSH or PEM private key text (SFTP only)."""
    passphrase: str | None = field(default=None, repr=False)

    @property
    def method(self) -> str:
        """How the collector logs in, for status and logs: 'key', 'password' or 'none'."""
        return "key" if self.private_key else "password" if self.password else "none"


def new_secret_key() -> str:
    return Fernet.generate_key().decode()


def _fernet(secret_key: str | None) -> Fernet:
    if not secret_key:
        raise SecretKeyError("CDRFLOW_SECRET_KEY is not set: source passwords and keys are stored encrypted "
                             "with it (generate one with 'cdrflow sources keygen')")
    try:
        return Fernet(secret_key.encode())
    except (ValueError, TypeError) as exc:
        raise SecretKeyError("CDRFLOW_SECRET_KEY is not a valid Fernet key (32 url-safe base64-encoded bytes; "
                             "generate one with 'cdrflow sources keygen')") from exc


def encrypt(credentials: Credentials, secret_key: str | None) -> bytes:
    doc = {"password": credentials.password, "private_key": credentials.private_key,
           "passphrase": credentials.passphrase}
    return _fernet(secret_key).encrypt(orjson.dumps(doc))


def decrypt(token: bytes | None, secret_key: str | None) -> Credentials:
    if not token:
        return Credentials()
    try:
        doc = orjson.loads(_fernet(secret_key).decrypt(token))
    except InvalidToken as exc:
        raise SecretKeyError("stored source credentials can't be decrypted with CDRFLOW_SECRET_KEY: the key "
                             "changed since they were saved; set the old key or re-add the source") from exc
    return Credentials(doc.get("password"), doc.get("private_key"), doc.get("passphrase"))
