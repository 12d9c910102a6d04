"""Who may use cdrflow: users with roles and argon2 password hashes, API tokens kept only as their
SHA-256, and the audit trail of every state change. Plain functions on a database session, used by
the admin API's middleware (``services.admin.auth``) and by the ``cdrflow users|tokens|audit``
commands alike; nothing here knows about HTTP.

Invariants:
- a password is stored only as its argon2id hash (argon2-cffi's defaults); a token only as
  ``sha256(token)``. Neither can be read back: a token is shown once, when it is made;
- a token is found by the hash of what was presented (an index lookup), never by comparing
  secrets one by one, so how long a lookup takes says nothing about any stored token;
- a disabled user can't log in, and their sessions and tokens stop working at once (every
  request looks the user up again)."""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cdrflow.db import Database, models
from cdrflow.errors import InputError
from cdrflow.log import get_logger

log = get_logger(__name__)

ROLES = ("viewer", "operator", "admin")
"""Ordered by power: each role may do all that the ones before it may."""

LOCAL_ADMIN = "local-admin"
"""The built-in admin the CLI acts as on this machine, through ``<data_dir>/admin.token``."""

ADMIN_TOKEN_FILE = "admin.token"
TOKEN_LABEL = "cdrflow CLI on this machine (admin.token)"

LAST_USED_EVERY = timedelta(minutes=1)
"""A token's ``last_used_at`` is written at most this often, so API traffic isn't a write per request."""

MIN_PASSWORD = 8
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@-")

_hasher = PasswordHasher()


class AccountError(InputError):
    """A user or token command that can't be done as asked (unknown user, bad role, short password)."""


@dataclass(frozen=True)
class User:
    """Who is making a request: a user's name and role, as found for this request."""

    name: str
    role: str

    def can(self, role: str) -> bool:
        """Whether this user's role is ``role`` or more powerful."""
        return ROLES.index(self.role) >= ROLES.index(check_role(role))


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    return role


def _now() -> datetime:
    return datetime.now(UTC)


def _user_row(session: Session, name: str) -> models.User:
    row = session.get(models.User, name)
    if row is None:
        raise AccountError(f"no user named {name!r} (see 'cdrflow users list')")
    return row


def _check_name(name: str) -> str:
    if not name or len(name) > 64 or not set(name) <= NAME_CHARS:
        raise AccountError(f"bad user name {name!r}: 1 to 64 letters, digits, '.', '_', '@' or '-'")
    return name


def _check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password is too short: at least {MIN_PASSWORD} characters")
    return password


def hash_password(password: str) -> str:
    return _hasher.hash(_check_password(password))


def add_user(session: Session, name: str, role: str, password: str | None) -> models.User:
    """A new user; ``password`` None only for users that act through API tokens alone."""
    _check_name(name)
    check_role(role)
    if session.get(models.User, name) is not None:
        raise AccountError(f"a user named {name!r} exists already")
    row = models.User(name=name, role=role, password_hash=hash_password(password) if password is not None else None,
                      created_at=_now())
    session.add(row)
    session.flush()
    return row


def set_password(session: Session, name: str, password: str) -> None:
    _user_row(session, name).password_hash = hash_password(password)


def set_role(session: Session, name: str, role: str) -> None:
    _user_row(session, name).role = check_role(role)


def disable_user(session: Session, name: str) -> bool:
    """Disable a user (their sessions and tokens stop working); False if they were disabled already."""
    row = _user_row(session, name)
    if row.disabled_at is not None:
        return False
    row.disabled_at = _now()
    return True


def list_users(session: Session) -> list[models.User]:
    return list(session.scalars(select(models.User).order_by(models.User.name)))


def active_user(session: Session, name: str) -> User | None:
    """The user of that name if they exist and aren't disabled."""
    row = session.get(models.User, name)
    if row is None or row.disabled_at is not None or row.role not in ROLES:
        return None
    return User(row.name, row.role)


def authenticate(session: Session, name: str, password: str) -> User | None:
    """The user, if the password is theirs and they aren't disabled. An unknown name costs a hash
    all the same, so the reply's timing doesn't tell which names exist."""
    row = session.get(models.User, name)
    if row is None or row.password_hash is None:
        _hasher.hash(password or "x")
        return None
    try:
        _hasher.verify(row.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    if row.disabled_at is not None or row.role not in ROLES:
        return None
    if _hasher.check_needs_rehash(row.password_hash):
        row.password_hash = _hasher.hash(password)
    return User(row.name, row.role)


# --- API tokens ---------------------------------------------------------------------------


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add_token(session: Session, user: str, name: str) -> tuple[models.ApiToken, str]:
    """A new API token for ``user``: the row (hash only) and the token itself, to show once."""
    owner = _user_row(session, user)
    if owner.disabled_at is not None:
        raise AccountError(f"user {user!r} is disabled: a token of theirs would be refused")
    if not name.strip():
        raise AccountError("a token needs a name saying what it is for (--name)")
    token = "cdrflow_" + secrets.token_urlsafe(32)
    row = models.ApiToken(user=user, name=name.strip(), token_hash=token_hash(token), created_at=_now())
    session.add(row)
    session.flush()
    return row, token


def revoke_token(session: Session, token_id: int) -> models.ApiToken:
    row = session.get(models.ApiToken, token_id)
    if row is None:
        raise AccountError(f"no API token with id {token_id} (see 'cdrflow tokens list')")
    if row.revoked_at is None:
        row.revoked_at = _now()
    return row


def list_tokens(session: Session) -> list[models.ApiToken]:
    return list(session.scalars(select(models.ApiToken).order_by(models.ApiToken.id)))


def token_user(session: Session, token: str) -> User | None:
    """The active user owning this unrevoked token, if any; notes when the token was last used."""
    if not token:
        return None
    row = session.scalars(select(models.ApiToken).where(models.ApiToken.token_hash == token_hash(token))).first()
    if row is None or row.revoked_at is not None or not secrets.compare_digest(row.token_hash, token_hash(token)):
        return None
    user = active_user(session, row.user)
    if user is not None:
        now = _now()
        if row.last_used_at is None or now - row.last_used_at >= LAST_USED_EVERY:
            row.last_used_at = now
    return user


def ensure_admin_token(database: Database, data_dir: Path) -> Path | None:
    """Make sure ``<data_dir>/admin.token`` holds a working token of the built-in ``local-admin``
    (created if absent), so every CLI command on this machine works with ``cdrflow up`` unchanged.

    Steps, in this order: 1. a file whose token still works is kept as it is; 2. otherwise a new
    token is committed to the database; 3. only then is it written to the file (0600, via a
    temporary file and a rename, so a reader never sees half a token). Returns the file, or None if
    an operator disabled ``local-admin`` on purpose (then no token is made)."""
    path = data_dir / ADMIN_TOKEN_FILE
    try:
        existing = path.read_text().strip()
    except OSError:
        existing = ""
    with database.transaction() as session:
        if existing and (user := token_user(session, existing)) is not None and user.name == LOCAL_ADMIN:
            return path
        row = session.get(models.User, LOCAL_ADMIN)
        if row is None:
            try:
                with session.begin_nested():
                    add_user(session, LOCAL_ADMIN, "admin", None)
            except IntegrityError:  # another admin instance made it at the same moment
                pass
            row = session.get(models.User, LOCAL_ADMIN)
        if row is None or row.disabled_at is not None:
            log.warning("local_admin_disabled", hint="no admin.token written; the CLI needs CDRFLOW_API_TOKEN")
            return None
        _, token = add_token(session, LOCAL_ADMIN, TOKEN_LABEL)
        write_audit(session, LOCAL_ADMIN, "token.add", f"user {LOCAL_ADMIN}", "admin service start-up",
                    {"file": str(path)})
    write_private(path, token + "\n")
    log.info("admin_token_written", file=str(path))
    return path


def write_private(path: Path, text: str, *, replace: bool = True) -> None:
    """Write a secret file readable by its owner only (0600), atomically. ``replace=False``: keep
    a file that is there already (another process made it first); the caller reads it back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
    finally:
        tmp.unlink(missing_ok=True)


# --- audit --------------------------------------------------------------------------------


def write_audit(session: Session, user: str | None, action: str, target: str, reason: str | None = None,
                detail: dict[str, Any] | None = None) -> models.AuditEntry:
    """One audit row, in the caller's transaction: it commits (or rolls back) with the change."""
    row = models.AuditEntry(at=_now(), user=user, action=action, target=target[:300],
                            reason=reason or None, detail=detail or None)
    session.add(row)
    return row


def audit_since(session: Session, since: datetime | None = None, limit: int | None = None) -> list[models.AuditEntry]:
    """Audit rows, newest first, at or after ``since``."""
    query = select(models.AuditEntry).order_by(models.AuditEntry.at.desc(), models.AuditEntry.id.desc())
    if since is not None:
        query = query.where(models.AuditEntry.at >= since)
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query))


def audit_json(row: models.AuditEntry) -> dict[str, Any]:
    return {"id": row.id, "at": row.at.isoformat(), "user": row.user, "action": row.action,
            "target": row.target, "reason": row.reason, "detail": row.detail}
