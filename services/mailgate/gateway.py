"""The SMTP conversation (aiosmtpd handler): refuse what can't be taken, as early as possible,
and spool what can, durably, before answering 250.

- RCPT: an address that is not one of the gateway's forms, an unknown carrier, or a sender not on
  the carrier's allow-list gets 550 with the reason.
- DATA: the message is opened and planned (``extract`` + ``plan``) and refused with the reason
  if any file can't be placed or a limit is passed; otherwise its raw bytes go into the file
  store (fsync + rename) and a ``mail_messages`` row is committed; only then 250. The worker
  announces the files afterwards, also after a restart.
"""

from __future__ import annotations

import asyncio
import hmac
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from sqlalchemy import select

from cdrflow.db.models import Carrier, MailMessage
from cdrflow.errors import CdrflowError
from cdrflow.log import get_logger
from cdrflow.runtime import Runtime
from cdrflow.settings import Settings
from services.mailgate.addresses import UnknownAddress, parse_address
from services.mailgate.extract import Limits, MessageRefused, extract
from services.mailgate.plan import CarrierRule, plan_arrivals, sender_refusal

log = get_logger(__name__)

CARRIER_CACHE_SECONDS = 2.0
MAX_RECIPIENTS = 10  # each file goes down each recipient's route: a cap on how far one message multiplies


def limits_of(settings: Settings) -> Limits:
    return Limits(max_files=settings.mailgate_max_attachments, max_unpacked=settings.mailgate_max_unpacked_bytes)


def load_carriers(runtime: Runtime) -> dict[str, CarrierRule]:
    """Every carrier's mail rules, keyed by lower-cased code (mail addresses are case-insensitive)."""
    with runtime.database.transaction() as session:
        rows = session.execute(select(Carrier.code, Carrier.file_name_pattern, Carrier.mail_senders)).all()
    rules = {}
    for code, pattern, senders in rows:
        rule = CarrierRule(code, pattern, senders)
        if (problem := rule.pattern_problem()) is not None:
            log.error("carrier_file_name_pattern_invalid", carrier=code, error=problem)
        rules[code.lower()] = rule
    return rules


def parse_users(spec: str | None) -> dict[str, str]:
    """``user:password`` pairs separated by spaces (settings.mailgate_users)."""
    users = {}
    for pair in (spec or "").split():
        user, _, password = pair.partition(":")
        if user and password:
            users[user] = password
    return users


class Gateway:
    """aiosmtpd handler. ``wake`` tells the worker a message was spooled."""

    def __init__(self, runtime: Runtime, wake: Callable[[], None] = lambda: None) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.wake = wake
        self._carriers: dict[str, CarrierRule] = {}
        self._carriers_at = 0.0

    async def carriers(self) -> dict[str, CarrierRule]:
        if time.monotonic() - self._carriers_at > CARRIER_CACHE_SECONDS:
            self._carriers = await asyncio.to_thread(load_carriers, self.runtime)
            self._carriers_at = time.monotonic()
        return self._carriers

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return f"452 4.5.3 more than {MAX_RECIPIENTS} recipients: send the rest in another message"
        try:
            route = parse_address(address, self.settings.mail_domain)
        except UnknownAddress as exc:
            log.info("mail_recipient_refused", recipient=address, reason=str(exc))
            return f"550 5.1.1 {exc}"
        if route.carrier is not None:
            try:
                carriers = await self.carriers()
            except CdrflowError:
                return "451 4.3.0 can't check the recipient right now: try again later"
            carrier = carriers.get(route.carrier)
            if carrier is None:
                return (f"550 5.1.1 no carrier {route.carrier!r} here: check the address "
                        "(an operator adds carriers with 'cdrflow carriers add')")
            if not session.authenticated and (refusal := sender_refusal(carrier, envelope.mail_from or "")):
                log.info("mail_sender_refused", sender=envelope.mail_from, carrier=carrier.code)
                return refusal.reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        user = session.auth_data if session.authenticated else None
        try:
            carriers = await self.carriers()
            message_id, files = await asyncio.to_thread(self._accept, raw, envelope.mail_from or "",
                                                        list(envelope.rcpt_tos), carriers, user)
        except MessageRefused as exc:
            log.info("mail_refused", sender=envelope.mail_from, reason=exc.reason)
            return exc.reply
        except CdrflowError as exc:
            log.error("mail_spool_failed", sender=envelope.mail_from, error=str(exc))
            return "451 4.3.0 can't store the message right now: try again later"
        except Exception:  # a bug must not bounce the carrier's files for good: it retries later
            log.exception("mail_spool_crashed", sender=envelope.mail_from)
            return "451 4.3.0 the gateway failed to take the message: try again later"
        self.wake()
        return f"250 2.0.0 accepted as {message_id}: {files} billing file(s)"

    def _accept(self, raw: bytes, sender: str, recipients: list[str], carriers: dict[str, CarrierRule],
                user: str | None) -> tuple[str, int]:
        routes = [parse_address(r, self.settings.mail_domain) for r in recipients]
        found = extract(raw, limits_of(self.settings), keep=False)  # only names and counts are needed here
        arrivals = plan_arrivals(routes, found, carriers, sender, authenticated=user is not None)
        stored = self.runtime.store.put_bytes(raw)
        message_id = str(uuid.uuid4())
        with self.runtime.database.transaction() as session:
            session.add(MailMessage(id=message_id, fingerprint=stored.fingerprint, sender=sender,
                                    recipients=orjson.dumps(recipients).decode(), authenticated_as=user,
                                    received_at=datetime.now(UTC), status="pending"))
        log.info("mail_accepted", message_id=message_id, sender=sender, files=len(arrivals),
                 ignored=[p.name for p in found.ignored], fingerprint=stored.fingerprint)
        return message_id, len(arrivals)


def authenticator(users: dict[str, str]) -> Callable[..., AuthResult]:
    """PLAIN and LOGIN against the configured operators (constant-time comparison; never logged)."""

    def check(server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace")
        expected = users.get(login)
        ok = expected is not None and hmac.compare_digest(expected.encode(), auth_data.password)
        log.info("mail_auth", user=login, success=ok)
        if not ok:  # handled=False: aiosmtpd answers 535 (with handled=True the client would hang)
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=login)

    return check
