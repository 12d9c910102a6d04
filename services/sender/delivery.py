"""Email delivery of invoices and credit notes (library: no Kafka; the database session and the
relay are handed in).

A delivery is one email of one document to one address, an ``invoice_deliveries`` row:

    queued ──▶ sending ──▶ sent
                  │
                  ├──▶ failed ──▶ sending …   (retried with backoff, up to the most attempts)
                  └──▶ uncertain              (the mail may or may not have gone: never retried)

Never mailed twice: a delivery is marked ``sending`` (and its attempt counted) in a committed
transaction *before* the relay is spoken to, and only ``queued`` or ``failed`` deliveries are
ever taken. A ``sending`` row found at start-up means the sender stopped between handing the
mail over and recording the outcome; an SMTP relay can't be asked whether it took a message,
so the row becomes ``uncertain`` and only an operator sends it again, as a new delivery with a
new Message-ID (``cdrflow invoices send NUMBER``). Automatic delivery is at-most-once.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from cdrflow.db.models import InvoiceDelivery
from cdrflow.db.upsert import insert_new
from cdrflow.errors import ConfigurationError, InfrastructureError, InputError

QUEUED, SENDING, SENT, FAILED, UNCERTAIN = "queued", "sending", "sent", "failed", "uncertain"
STATUSES = (QUEUED, SENDING, SENT, FAILED, UNCERTAIN)

AUTOMATIC = "sender"
"""``requested_by`` of the delivery the sender queues itself when a document is issued."""

NO_BILLING_EMAIL = "customer has no billing email"
INTERRUPTED = ("the sender stopped while handing this mail to the relay: it may or may not have gone; "
               "check with the customer, then resend with 'cdrflow invoices send {number}' if needed")
OUTCOME_UNKNOWN = ("the connection broke after the mail was handed to the relay, before it answered: "
                   "it may or may not have gone; resend with 'cdrflow invoices send {number}' if needed")

SMTP_TIMEOUT_S = 60.0
"""Seconds the relay may take to connect or answer one command."""


class RelayError(InfrastructureError):
    """The SMTP relay did not take a message."""


class MessageRefusedError(RelayError):
    """The relay refused the message, or it never reached the relay: it was not sent, so trying
    again later is safe."""


class OutcomeUnknownError(RelayError):
    """The connection broke after the message was handed over and before the relay answered:
    it may have been taken, so it must not be sent again automatically."""


class BadAddressError(InputError):
    """An email address is not one (no ``local@domain``)."""


@dataclass(frozen=True)
class Relay:
    """The SMTP relay invoices go through. ``tls_context`` defaults to the system's trust store."""

    host: str
    port: int = 587
    starttls: bool = True
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)
    timeout: float = SMTP_TIMEOUT_S


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    content_type: str  # "application/pdf"


@dataclass(frozen=True)
class DocumentMail:
    """What one document's email says and carries, whoever it goes to."""

    number: str
    subject: str
    body: str
    attachments: tuple[Attachment, ...]


def checked_address(text: str) -> str:
    """``text`` if it is one plain ``local@domain`` address, else a BadAddressError saying why. A
    domain without a dot is allowed: ``billing@localhost`` (the default sender), an intranet host."""
    name, address = parseaddr(text.strip())
    local, at, domain = address.rpartition("@")
    if name or not at or not local or not domain or any(c.isspace() for c in address):
        raise BadAddressError(f"{text!r} is not an email address (expected local@domain, nothing else)")
    return address


def mail_domain(mail_from: str) -> str:
    """The domain of the From address, which is also that of every Message-ID we make."""
    try:
        return checked_address(mail_from).rpartition("@")[2]
    except BadAddressError as exc:
        raise ConfigurationError(f"CDRFLOW_MAIL_FROM: {exc}") from None


def message_id_for(number: str, sequence: int, mail_from: str) -> str:
    """The Message-ID of a document's ``sequence``-th delivery: fixed per delivery, unique per
    document and attempt at it (1 is the automatic delivery, 2… the operator's resends)."""
    return f"<{number}.{sequence}@{mail_domain(mail_from)}>"


def retry_delay(attempts: int, backoff_seconds: float) -> timedelta:
    """The wait after the ``attempts``-th failed try: the backoff, doubled after each further try
    (60 s, 120 s, 240 s, … for a 60 s backoff)."""
    if attempts < 1:
        raise ValueError(f"a retry follows a failed attempt: attempts must be at least 1, not {attempts}")
    return timedelta(seconds=backoff_seconds * 2 ** (attempts - 1))


# --- queueing --------------------------------------------------------------------------------


def queue_first_delivery(session: Session, number: str, to_address: str | None, mail_from: str,
                         now: datetime, *, reason: str | None = None) -> bool:
    """Queue a document's automatic delivery, once: its Message-ID is fixed (sequence 1), so a
    repeat of the issuing event inserts nothing. With no address the delivery is recorded
    ``failed`` with the reason (default: the customer has none), never retried by itself, for
    an operator to see and resend. Returns whether it was new. (Checked by document too, so a
    From domain changed between a first event and its repeat doesn't make a second one.)"""
    if session.scalar(select(InvoiceDelivery.id).where(InvoiceDelivery.document_number == number,
                                                       InvoiceDelivery.requested_by == AUTOMATIC).limit(1)):
        return False
    row = {"document_number": number, "to_address": to_address or "", "status": QUEUED if to_address else FAILED,
           "attempts": 0, "last_error": None if to_address else reason or NO_BILLING_EMAIL, "next_attempt_at": None,
           "message_id": message_id_for(number, 1, mail_from), "requested_by": AUTOMATIC, "created_at": now,
           "sent_at": None}
    return insert_new(session, InvoiceDelivery.__table__, [row], ("message_id",)) == 1


def queue_resend(session: Session, number: str, to_address: str, requested_by: str, mail_from: str,
                 now: datetime) -> InvoiceDelivery:
    """A new delivery of a document on purpose (an operator's resend), with a Message-ID of its
    own. Two resends at once each get their own: the sequence moves on past a taken one."""
    address = checked_address(to_address)
    sequence = session.scalar(select(func.count()).select_from(InvoiceDelivery)
                              .where(InvoiceDelivery.document_number == number)) + 1
    while True:
        message_id = message_id_for(number, sequence, mail_from)
        row = {"document_number": number, "to_address": address, "status": QUEUED, "attempts": 0,
               "last_error": None, "next_attempt_at": None, "message_id": message_id,
               "requested_by": requested_by, "created_at": now, "sent_at": None}
        if insert_new(session, InvoiceDelivery.__table__, [row], ("message_id",)):
            return session.scalars(select(InvoiceDelivery).where(InvoiceDelivery.message_id == message_id)).one()
        sequence += 1


def deliveries_of(session: Session, number: str) -> Sequence[InvoiceDelivery]:
    return session.scalars(select(InvoiceDelivery).where(InvoiceDelivery.document_number == number)
                           .order_by(InvoiceDelivery.id)).all()


# --- the delivery steps ----------------------------------------------------------------------


def mark_interrupted(session: Session) -> list[InvoiceDelivery]:
    """At start-up: every ``sending`` delivery becomes ``uncertain`` (never resent by itself)."""
    stuck = session.scalars(select(InvoiceDelivery).where(InvoiceDelivery.status == SENDING)).all()
    for delivery in stuck:
        delivery.status, delivery.next_attempt_at = UNCERTAIN, None
        delivery.last_error = INTERRUPTED.format(number=delivery.document_number)
    return list(stuck)


@dataclass(frozen=True)
class Due:
    """A delivery to try, as it was seen when it was found due (the claim compares against it)."""

    id: int
    number: str
    to_address: str
    message_id: str
    status: str
    attempts: int


def due_deliveries(session: Session, now: datetime, max_attempts: int, limit: int = 50) -> list[Due]:
    """Deliveries to try now, oldest first: queued ones, and failed ones with tries left whose
    retry time has come. (A failed one without a retry time is the operator's: no address.)"""
    retry_due = ((InvoiceDelivery.status == FAILED) & (InvoiceDelivery.attempts < max_attempts)
                 & (InvoiceDelivery.next_attempt_at <= now))
    rows = session.scalars(select(InvoiceDelivery).where((InvoiceDelivery.status == QUEUED) | retry_due)
                           .order_by(InvoiceDelivery.id).limit(limit))
    return [Due(d.id, d.document_number, d.to_address, d.message_id, d.status, d.attempts) for d in rows]


def claim(session: Session, delivery: Due) -> int | None:
    """Mark a due delivery ``sending`` and count the attempt; the caller commits *before* the
    relay is spoken to. Compare-and-set on the status and attempts it was seen with, so of two
    senders taking the same delivery only one gets it. Returns the attempt's number, or None."""
    attempt = delivery.attempts + 1
    taken = session.execute(
        update(InvoiceDelivery)
        .where(InvoiceDelivery.id == delivery.id, InvoiceDelivery.status == delivery.status,
               InvoiceDelivery.attempts == delivery.attempts)
        .values(status=SENDING, attempts=attempt, next_attempt_at=None)).rowcount
    return attempt if taken == 1 else None


def record_sent(session: Session, delivery_id: int, attempt: int, now: datetime) -> None:
    """The relay took the message. (Also over ``uncertain``: a second sender starting up may have
    marked this very attempt while it was in flight; the mail did go.)"""
    session.execute(update(InvoiceDelivery)
                    .where(InvoiceDelivery.id == delivery_id, InvoiceDelivery.attempts == attempt)
                    .values(status=SENT, sent_at=now, last_error=None, next_attempt_at=None))


def record_failed(session: Session, delivery_id: int, attempt: int, error: str, now: datetime, *,
                  max_attempts: int, backoff_seconds: float) -> datetime | None:
    """The message was not sent: ``failed``, retried after the backoff while tries are left.
    Returns when it will be tried again (None: the operator's now)."""
    retry_at = now + retry_delay(attempt, backoff_seconds) if attempt < max_attempts else None
    if retry_at is None:
        error = f"{error} (gave up after {attempt} attempts: resend with 'cdrflow invoices send')"
    session.execute(update(InvoiceDelivery)
                    .where(InvoiceDelivery.id == delivery_id, InvoiceDelivery.attempts == attempt)
                    .values(status=FAILED, last_error=error[:2000], next_attempt_at=retry_at))
    return retry_at


def record_uncertain(session: Session, delivery_id: int, attempt: int, error: str) -> None:
    session.execute(update(InvoiceDelivery)
                    .where(InvoiceDelivery.id == delivery_id, InvoiceDelivery.attempts == attempt)
                    .values(status=UNCERTAIN, last_error=error[:2000], next_attempt_at=None))


# --- the message and the relay ---------------------------------------------------------------


def build_message(mail: DocumentMail, *, to_address: str, mail_from: str, message_id: str,
                  now: datetime) -> EmailMessage:
    """The email of one delivery: the document's text and attachments, this delivery's Message-ID."""
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = mail_from, to_address, mail.subject
    message["Date"] = format_datetime(now)
    message["Message-ID"] = message_id
    message.set_content(mail.body)
    for a in mail.attachments:
        maintype, _, subtype = a.content_type.partition("/")
        message.add_attachment(a.content, maintype=maintype, subtype=subtype, filename=a.filename)
    return message


def send(relay: Relay, message: EmailMessage) -> None:
    """Hand ``message`` to the relay (STARTTLS and login as configured), to its one ``To``.

    Any failure up to the end of the recipient is a MessageRefusedError: nothing was handed
    over. From DATA on, a refusal the relay answers (4xx/5xx) is a MessageRefusedError too; a
    connection that breaks before the relay's answer is an OutcomeUnknownError."""
    sender, recipient = message["From"], message["To"]
    try:
        smtp = smtplib.SMTP(relay.host, relay.port, timeout=relay.timeout)
    except (OSError, smtplib.SMTPException) as exc:
        raise MessageRefusedError(f"can't connect to the SMTP relay {relay.host}:{relay.port}: {exc}") from exc
    try:
        try:
            smtp.ehlo()
            if relay.starttls:
                smtp.starttls(context=relay.tls_context or ssl.create_default_context())
                smtp.ehlo()
            if relay.username and relay.password:
                smtp.login(relay.username, relay.password)
            code, reply = smtp.mail(sender)
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, reply, sender)
            code, reply = smtp.rcpt(recipient)
            if code not in (250, 251):
                raise smtplib.SMTPRecipientsRefused({recipient: (code, reply)})
        except (OSError, smtplib.SMTPException) as exc:
            raise MessageRefusedError(f"SMTP relay {relay.host}:{relay.port}: {_describe(exc)}") from exc
        try:
            code, reply = smtp.data(message.as_bytes(policy=message.policy.clone(linesep="\r\n")))
            if code != 250:  # smtplib's data() raises for a refused DATA command, not for a refused message
                raise smtplib.SMTPDataError(code, reply)
        except smtplib.SMTPResponseException as exc:
            raise MessageRefusedError(f"SMTP relay {relay.host}:{relay.port} refused the message: "
                                      f"{_describe(exc)}") from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise OutcomeUnknownError(f"SMTP relay {relay.host}:{relay.port}: {_describe(exc)}") from exc
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            pass  # the relay took the message already; how it says goodbye changes nothing
    finally:
        smtp.close()


def _describe(exc: Exception) -> str:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "; ".join(f"recipient {r} refused: {code} {_text(reply)}" for r, (code, reply) in exc.recipients.items())
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{exc.smtp_code} {_text(exc.smtp_error)}"
    return f"{type(exc).__name__}: {exc}"


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
