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


SAME_KEY_HINT = ("set CDRFLOW_SECRET_KEY to the same key the sources were saved with ('export "
                 "CDRFLOW_SECRET_KEY=<that key>' where the collector, 'cdrflow up' or 'cdrflow collect' runs); a new "
                 "key from 'cdrflow sources keygen' can't decrypt them. If that key is lost, add each source again "
                 "with its password or key ('cdrflow sources add NAME …') to save it under the new key")
"""How to fix credentials that can't be decrypted: one wording for the collector's start-up check
and for each source's poll."""


def _fernet(secret_key: str | None) -> Fernet:
    if not secret_key:
        raise SecretKeyError("CDRFLOW_SECRET_KEY is not set: source passwords and keys are stored encrypted "
                             "with it (generate one with 'cdrflow sources keygen' and keep it; if sources are "
                             "saved already, set the key they were saved with)")
    try:
        return Fernet(secret_key.encode())
    except (ValueError, TypeError) as exc:
        raise SecretKeyError("CDRFLOW_SECRET_KEY is not a valid Fernet key (32 url-safe base64-encoded bytes, as "
                             "'cdrflow sources keygen' prints it)") from exc


def encrypt(credentials: Credentials, secret_key: str | None) -> bytes:
    doc = {"password": credentials.password, "private_key": credentials.private_key,
           "passphrase": credentials.passphrase}
    return _fernet(secret_key).encrypt(orjson.dumps(doc))


def decrypt(token: bytes | None, secret_key: str | None, source: str | None = None) -> Credentials:
    """The credentials source ``source`` was saved with; a SecretKeyError naming the source and
    saying how to fix it when ``secret_key`` is missing or not the key they were saved with."""
    if not token:
        return Credentials()
    who = f"source {source}" if source else "saved source credentials"
    if not secret_key:
        raise SecretKeyError(f"{who}: CDRFLOW_SECRET_KEY is not set, but its password or key is saved encrypted "
                             f"with a key: {SAME_KEY_HINT}")
    try:
        doc = orjson.loads(_fernet(secret_key).decrypt(token))
    except SecretKeyError as exc:
        raise SecretKeyError(f"{who}: {exc}: {SAME_KEY_HINT}") from exc
    except InvalidToken as exc:
        raise SecretKeyError(f"{who}: its saved password or key can't be decrypted with this CDRFLOW_SECRET_KEY, "
                             f"which is not the key it was saved with: {SAME_KEY_HINT}") from exc
    return Credentials(doc.get("password"), doc.get("private_key"), doc.get("passphrase"))
