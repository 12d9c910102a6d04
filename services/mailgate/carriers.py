"""Carriers' mail rules, as operators set them: the file-name pattern that lets a file mailed to
``cdrs@`` find its carrier, and the senders allowed to mail the carrier's files."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from cdrflow.db.models import Carrier, MailMessage
from cdrflow.errors import InputError, UnknownCarrierError
from cdrflow.reference import record_change

UNCHANGED = object()


@dataclass(frozen=True)
class MailRules:
    carrier: str
    file_name_pattern: str | None
    mail_senders: str | None


def set_mail_rules(session: Session, code: str, file_name_pattern: object = UNCHANGED,
                   mail_senders: object = UNCHANGED) -> MailRules:
    """Change what is given (an empty string clears it); a pattern must be a regular expression."""
    carrier = session.get(Carrier, code)
    if carrier is None:
        raise UnknownCarrierError(code)
    if file_name_pattern is not UNCHANGED:
        pattern = str(file_name_pattern or "").strip() or None
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise InputError(f"file-name pattern {pattern!r} is not a regular expression ({exc}): "
                                 "write it as Python's re module reads it, e.g. '^GAMMA_.*\\.csv$'") from exc
        carrier.file_name_pattern = pattern
    if mail_senders is not UNCHANGED:
        carrier.mail_senders = " ".join(re.split(r"[\s,]+", str(mail_senders or "").strip())) or None
    record_change(session, "carrier", code, "changed",
                  f"mail rules: pattern={carrier.file_name_pattern!r} senders={carrier.mail_senders!r}")
    return MailRules(carrier.code, carrier.file_name_pattern, carrier.mail_senders)


def mail_rules(session: Session) -> list[MailRules]:
    return [MailRules(*row) for row in session.execute(
        select(Carrier.code, Carrier.file_name_pattern, Carrier.mail_senders).order_by(Carrier.code))]


def recent_messages(session: Session, status: str | None = None, limit: int = 50) -> list[MailMessage]:
    """The newest accepted messages first, optionally only those with ``status`` (pending, processed, failed)."""
    query = select(MailMessage).order_by(MailMessage.received_at.desc(), MailMessage.id).limit(limit)
    if status:
        query = query.where(MailMessage.status == status)
    return list(session.scalars(query))


def retry_message(session: Session, message_id: str) -> MailMessage:
    """A failed message goes back to pending: the gateway's worker announces its files again."""
    message = session.get(MailMessage, message_id)
    if message is None:
        raise InputError(f"no mail message {message_id}: see 'cdrflow mail messages --status failed'")
    if message.status != "failed":
        raise InputError(f"mail message {message_id} is {message.status}, not failed: nothing to retry")
    message.status, message.processed_at = "pending", None
    return message
