"""Configuring sources (``cdrflow sources add|list|trust|status``): plain functions on a session."""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncssh
import orjson
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from cdrflow.db.models import Carrier, CollectedFile, Source
from cdrflow.errors import InputError, UnknownCarrierError
from services.collector.credentials import SAME_KEY_HINT, Credentials, decrypt, encrypt
from services.collector.errors import SecretKeyError
from services.collector.remote import DEFAULT_PORTS, PROTOCOLS
from services.collector.rules import Rule

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class SourceSpec:
    name: str
    carrier: str
    protocol: str
    host: str
    username: str
    credentials: Credentials
    rules: list[Rule]
    port: int | None = None
    remote_dir: str = "."
    poll_interval: int = 300  # seconds
    delete_after_collect: bool = False
    verify_tls: bool = True
    tls_ca: str | None = None  # PEM: the FTPS server's CA or self-signed certificate


def save_source(session: Session, spec: SourceSpec, secret_key: str | None) -> Source:
    """Add a source or change one; a changed host forgets its pinned host key."""
    if not _NAME.match(spec.name):
        raise InputError(f"source name {spec.name!r}: use lower-case letters, digits, '.', '_' or '-'")
    if spec.protocol not in PROTOCOLS:
        raise InputError(f"protocol {spec.protocol!r} is not one of {', '.join(PROTOCOLS)}")
    if session.get(Carrier, spec.carrier) is None:
        raise UnknownCarrierError(spec.carrier)
    if not spec.rules:
        raise InputError("a source needs at least one rule (PATTERN=KIND,PERIOD,DIRECTION)")
    if spec.poll_interval < 1:
        raise InputError("poll interval must be at least 1 second")
    if spec.protocol != "sftp" and spec.credentials.private_key:
        raise InputError("a private key is for SFTP sources only; FTP and FTPS log in with a password")
    if spec.tls_ca is not None and spec.protocol != "ftps":
        raise InputError("a CA certificate is for FTPS sources only")
    if spec.tls_ca is not None:
        _check_pem(spec.tls_ca)
    if spec.credentials.method == "none":
        raise InputError("a source needs a password or (SFTP) a private key")
    if spec.credentials.private_key:
        _check_private_key(spec.name, spec.credentials)
    port = spec.port or DEFAULT_PORTS[spec.protocol]
    src = session.get(Source, spec.name)
    if src is None:
        src = Source(name=spec.name, state="new", failures=0, collected=0, enabled=True)
        session.add(src)
    elif (src.host, src.port) != (spec.host, port):
        src.host_key = None
    src.carrier, src.protocol, src.host, src.port, src.username = (spec.carrier, spec.protocol, spec.host, port,
                                                                   spec.username)
    src.secret = encrypt(spec.credentials, secret_key)
    src.remote_dir = spec.remote_dir
    src.rules = orjson.dumps([r.to_dict() for r in spec.rules]).decode()
    src.poll_interval, src.delete_after_collect, src.verify_tls = (spec.poll_interval, spec.delete_after_collect,
                                                                   spec.verify_tls)
    src.tls_ca = spec.tls_ca
    src.next_poll_at = datetime.now(UTC)
    return src


def _check_pem(pem: str) -> None:
    try:
        ssl.create_default_context(cadata=pem)
    except (ssl.SSLError, ValueError) as exc:
        raise InputError(f"the CA file is not a PEM certificate ({exc}): give the carrier's CA certificate "
                         "as '-----BEGIN CERTIFICATE-----' text") from exc


def _check_private_key(name: str, credentials: Credentials) -> None:
    """The key is read here, as the collector will read it at each poll, so a wrong passphrase or a
    file that is not a private key is refused now rather than found at the first poll."""
    key, passphrase = credentials.private_key or "", credentials.passphrase
    try:
        asyncssh.import_private_key(key, passphrase)
        return
    except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as exc:
        reason = str(exc)
    try:
        asyncssh.import_private_key(key, None)
        encrypted = False
    except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as exc:
        encrypted = "passphrase" in str(exc).lower()  # asyncssh: "Passphrase must be specified …"
    if encrypted and passphrase is None:
        raise InputError(f"source {name}: the private key is encrypted with a passphrase: add the source again "
                         "with --ask-passphrase and type the key's passphrase")
    if encrypted:
        raise InputError(f"source {name}: the passphrase does not decrypt the private key ({reason}): check it "
                         "(e.g. 'ssh-keygen -y -f KEY_FILE' asks for it) and add the source again with "
                         "--ask-passphrase")
    hint = (" (this is a public key: give the private key file, the one without .pub)"
            if key.lstrip().startswith(("ssh-", "ecdsa-", "sk-")) else "")
    raise InputError(f"source {name}: the key file is not a private key that can be read ({reason}){hint}: give "
                     "the SFTP private key in OpenSSH ('-----BEGIN OPENSSH PRIVATE KEY-----') or PEM format")


def unreadable_sources(session: Session, secret_key: str | None) -> dict[str, SecretKeyError]:
    """Sources whose saved credentials ``secret_key`` can't decrypt, each with the error saying
    why and what to do (the collector checks this at start-up, ``sources add`` after saving)."""
    unreadable = {}
    for name, token in session.execute(select(Source.name, Source.secret).order_by(Source.name)):
        try:
            decrypt(token, secret_key, name)
        except SecretKeyError as exc:
            unreadable[name] = exc
    return unreadable


def missing_secret_key_error(names: list[str]) -> SecretKeyError:
    """What the collector says when started without CDRFLOW_SECRET_KEY while sources are saved."""
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return SecretKeyError(f"CDRFLOW_SECRET_KEY is not set, but {len(names)} source(s) ({shown}) have a password or "
                          f"key saved encrypted with it: {SAME_KEY_HINT}")


@dataclass(frozen=True)
class EarlierCollection:
    """What was collected from a source before now, among some remote paths."""

    files: int
    last_at: datetime | None


def collected_before(session: Session, name: str, paths: list[str]) -> EarlierCollection:
    if not paths:
        return EarlierCollection(0, None)
    count, last_at = session.execute(
        select(func.count(), func.max(CollectedFile.collected_at))
        .where(CollectedFile.source == name, CollectedFile.path.in_(paths))).one()
    return EarlierCollection(int(count), last_at)


def get_source(session: Session, name: str) -> Source:
    src = session.get(Source, name)
    if src is None:
        raise InputError(f"no source {name!r}: see 'cdrflow sources list'")
    return src


def pin_host_key(session: Session, name: str, public_key: str) -> None:
    get_source(session, name).host_key = public_key


def request_poll(session: Session, name: str) -> None:
    """Ask the running collector to poll this source at its next tick (within a second)."""
    get_source(session, name)
    session.execute(update(Source).where(Source.name == name).values(next_poll_at=datetime.now(UTC)))


def set_enabled(session: Session, name: str, enabled: bool) -> None:
    """A disabled source keeps its configuration and memory of collected files but is not polled."""
    src = get_source(session, name)
    src.enabled = enabled
    if enabled:
        src.next_poll_at = datetime.now(UTC)


def remove_source(session: Session, name: str) -> int:
    """Forget a source and what it collected (the files themselves stay in the store and the
    pipeline). Returns how many collected-file records went with it."""
    get_source(session, name)
    forgotten = session.execute(delete(CollectedFile).where(CollectedFile.source == name)).rowcount
    session.execute(delete(Source).where(Source.name == name))
    return int(forgotten or 0)


def all_sources(session: Session) -> list[Source]:
    return list(session.scalars(select(Source).order_by(Source.name)))
