"""Configuring sources (``cdrflow sources add|list|trust|status``): plain functions on a session."""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from cdrflow.db.models import Carrier, CollectedFile, Source
from cdrflow.errors import InputError, UnknownCarrierError
from services.collector.credentials import Credentials, encrypt
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
