"""Sender service: invoice-issued and credit-note-issued → a delivery queued for the customer's
billing email (in the handler's transaction); the service's idle tick mails due deliveries
through the SMTP relay (``services.sender.delivery`` says how a mail is never sent twice).

Mailing in the idle tick, not in the handler: a relay that is down must not hold up the
stream or dead-letter an event. A tick works for at most ``TICK_BUDGET_S`` (then the loop
polls the broker again), and looks for due deliveries at most every ``LOOK_EVERY_S`` unless
this process has just queued one."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from cdrflow.bus import Outgoing, ServiceLoop, Topic
from cdrflow.db.models import CreditNote, Customer, Invoice
from cdrflow.errors import BadEventError, CdrflowError, InfrastructureError
from cdrflow.events import Event
from cdrflow.log import get_logger
from cdrflow.runtime import Runtime
from cdrflow.settings import Settings
from services.invoicer.document import InvoiceDocument, display_date, display_money, display_period, render_pdf
from services.invoicer.render import credit_note_document, invoice_calls_csv, invoice_document
from services.invoicer.tax import currency
from services.sender.delivery import (
    OUTCOME_UNKNOWN, Attachment, BadAddressError, DocumentMail, Due, MessageRefusedError, OutcomeUnknownError,
    Relay, build_message, checked_address, claim, due_deliveries, mail_domain, mark_interrupted,
    queue_first_delivery, record_failed, record_sent, record_uncertain, send,
)

log = get_logger(__name__)
T = TypeVar("T")

TICK_BUDGET_S = 5.0
LOOK_EVERY_S = 2.0


def relay_of(settings: Settings) -> Relay | None:
    """The configured SMTP relay; None when ``smtp_host`` is not set (delivery is off)."""
    if not settings.smtp_host:
        return None
    return Relay(settings.smtp_host, settings.smtp_port, settings.smtp_starttls, settings.smtp_username,
                 settings.smtp_password)


def document_mail(session: Session, number: str, settings: Settings) -> DocumentMail:
    """The email of an invoice (PDF and calls CSV) or a credit note (PDF), rendered now from
    what the billing run stored."""
    invoice = session.scalar(select(Invoice).where(Invoice.number == number))
    if invoice is not None:
        doc = invoice_document(session, invoice, settings)
        csv = invoice_calls_csv(session, invoice, settings.zone)
        return _mail(doc, (Attachment(f"{number}.pdf", render_pdf(doc), "application/pdf"),
                           Attachment(f"{number}-calls.csv", csv, "text/csv")))
    note = session.scalar(select(CreditNote).where(CreditNote.number == number))
    if note is not None:
        doc = credit_note_document(session, note, settings)
        return _mail(doc, (Attachment(f"{number}.pdf", render_pdf(doc), "application/pdf"),))
    raise BadEventError(f"no invoice or credit note numbered {number!r}")


def _mail(doc: InvoiceDocument, attachments: tuple[Attachment, ...]) -> DocumentMail:
    total = display_money(abs(doc.totals.total_minor), currency(doc.currency))
    period = display_period(doc.period_start, doc.period_end)
    if doc.kind == "invoice":
        subject = f"Invoice {doc.number} from {doc.seller.name}: {total} due"
        what = (f"Please find attached invoice {doc.number} for {period}: {total}, due by "
                f"{display_date(doc.due_date) if doc.due_date else 'the date shown on it'}. "
                "The calls it bills are listed in the attached CSV.")
    else:
        subject = f"Credit note {doc.number} from {doc.seller.name}: {total} credited"
        what = f"Please find attached credit note {doc.number}, crediting invoice {doc.credited_number} in full: {total}."
    contact = f"Questions about it: {doc.seller.email}\n" if doc.seller.email else ""
    body = f"Dear {doc.customer.name},\n\n{what}\n\n{contact}\n{doc.seller.name}\n"
    return DocumentMail(doc.number, subject, body, attachments)


class Sender:
    def __init__(self, runtime: Runtime, relay: Relay | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.relay = relay if relay is not None else relay_of(self.settings)
        self.clock = clock
        mail_domain(self.settings.mail_from)  # a From that is no address fails at start-up, not per mail
        self._recovered = False
        self._wake = True
        self._last_look = 0.0
        self._said_off = False

    # --- queueing (in the handler's transaction) --------------------------------------------

    def on_invoice_issued(self, event: Event, session: Session) -> Iterator[Outgoing]:
        event.require("invoice_number", "customer")
        self._queue(session, event.data["invoice_number"], event.data["customer"])
        return iter(())

    def on_credit_note_issued(self, event: Event, session: Session) -> Iterator[Outgoing]:
        event.require("credit_note_number", "customer")
        self._queue(session, event.data["credit_note_number"], event.data["customer"])
        return iter(())

    def _queue(self, session: Session, number: str, code: str) -> None:
        customer = session.get(Customer, code)
        if customer is None:
            raise BadEventError(f"{number} names unknown customer {code!r}")
        address, reason = customer.billing_email, None
        if address:
            try:
                address = checked_address(address)
            except BadAddressError as exc:
                address, reason = None, f"customer's billing email is unusable: {exc}"
        queued = queue_first_delivery(session, number, address, self.settings.mail_from, self.clock(),
                                      reason=reason)
        log.info("delivery_queued" if queued else "delivery_exists", document=number, customer=code,
                 to=address, failed_reason=reason if queued and not address else None)
        self._wake = self._wake or queued

    # --- delivering (the idle tick) ---------------------------------------------------------

    def tick(self) -> int:
        """Recover once, then mail what is due, within the tick's budget. Returns mails sent."""
        if not self._recovered:
            self.recover()
        if self.relay is None:
            if not self._said_off:
                log.warning("delivery_off", reason="CDRFLOW_SMTP_HOST is not set: deliveries stay queued")
                self._said_off = True
            return 0
        if not self._wake and time.monotonic() - self._last_look < LOOK_EVERY_S:
            return 0
        self._wake, self._last_look = False, time.monotonic()
        return self.deliver_due(budget_s=TICK_BUDGET_S)

    def recover(self) -> list[str]:
        """At start-up: deliveries left ``sending`` by a stopped sender become ``uncertain``."""
        with self.runtime.database.transaction() as session:
            stuck = [(d.id, d.document_number, d.message_id) for d in mark_interrupted(session)]
        for delivery_id, number, message_id in stuck:
            log.warning("delivery_uncertain", delivery=delivery_id, document=number, message_id=message_id,
                        reason="found sending at start-up: not resent automatically")
        self._recovered = True
        return [number for _, number, _ in stuck]

    def deliver_due(self, budget_s: float | None = None) -> int:
        started, sent = time.monotonic(), 0
        with self.runtime.database.transaction() as session:
            due = due_deliveries(session, self.clock(), self.settings.delivery_max_attempts)
        for delivery in due:
            if budget_s is not None and time.monotonic() - started > budget_s:
                self._wake = True  # more is due: look again on the next tick
                break
            sent += self.deliver(delivery) == "sent"
        return sent

    def deliver(self, delivery: Due) -> str:
        """One delivery, once. The steps, in this order:

        1. render the document's mail (nothing is claimed if the database is away);
        2. claim the delivery (``sending``, attempt + 1) and commit, *before* the relay hears of
           it; a render that failed is recorded ``failed`` in that same transaction instead;
        3. hand the mail to the relay;
        4. record the outcome: ``sent``; ``failed`` with a retry time when the relay refused it
           or never got it; ``uncertain`` when the connection broke after it was handed over.

        A stop between 2 and 4 leaves the delivery ``sending``: the next start makes it
        ``uncertain`` (``recover``), and it is never sent again by itself."""
        assert self.relay is not None
        s = self.settings
        problem, mail = None, None
        try:
            with self.runtime.database.transaction() as session:  # 1
                mail = document_mail(session, delivery.number, s)
        except InfrastructureError:
            raise
        except CdrflowError as exc:
            problem = f"can't make the mail: {exc}"
        with self.runtime.database.transaction() as session:  # 2
            attempt = claim(session, delivery)
            if attempt is None:
                return "taken"  # another sender has it
            if problem is not None:
                record_failed(session, delivery.id, attempt, problem, self.clock(),
                              max_attempts=s.delivery_max_attempts, backoff_seconds=s.delivery_backoff_seconds)
        if problem is not None or mail is None:
            log.error("delivery_failed", delivery=delivery.id, document=delivery.number, attempt=attempt,
                      error=problem)
            return "failed"
        message = build_message(mail, to_address=delivery.to_address, mail_from=s.mail_from,
                                message_id=delivery.message_id, now=self.clock())
        try:
            send(self.relay, message)  # 3
        except OutcomeUnknownError as exc:
            error = f"{OUTCOME_UNKNOWN.format(number=delivery.number)} ({exc})"
            self._record(lambda session: record_uncertain(session, delivery.id, attempt, error))
            log.error("delivery_uncertain", delivery=delivery.id, document=delivery.number, attempt=attempt,
                      error=str(exc))
            return "uncertain"
        except MessageRefusedError as exc:
            retry_at = self._record(lambda session: record_failed(
                session, delivery.id, attempt, str(exc), self.clock(),
                max_attempts=s.delivery_max_attempts, backoff_seconds=s.delivery_backoff_seconds))
            log.warning("delivery_failed", delivery=delivery.id, document=delivery.number, attempt=attempt,
                        error=str(exc), retry_at=retry_at.isoformat() if retry_at else None)
            return "failed"
        self._record(lambda session: record_sent(session, delivery.id, attempt, self.clock()))  # 4
        log.info("delivery_sent", delivery=delivery.id, document=delivery.number, to=delivery.to_address,
                 message_id=delivery.message_id, attempt=attempt)
        return "sent"

    def _record(self, step: Callable[[Session], T]) -> T:
        """Record an outcome the relay gave, retrying while the database is away: the outcome is
        known only here, and a delivery left ``sending`` would become ``uncertain`` at the next start."""
        backoff = 0.5
        while True:
            try:
                with self.runtime.database.transaction() as session:
                    return step(session)
            except InfrastructureError as exc:
                log.warning("delivery_outcome_not_recorded", error=str(exc)[:500], retry_in_s=backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 30.0)


def build_loop(runtime: Runtime) -> ServiceLoop:
    sender = Sender(runtime)
    s = runtime.settings
    return ServiceLoop(
        service="sender", namespace=s.namespace, bootstrap=s.bootstrap, database=runtime.database,
        visibility_timeout=s.visibility_timeout_seconds, producer=runtime.producer,
        handlers={Topic.INVOICE_ISSUED: sender.on_invoice_issued,
                  Topic.CREDIT_NOTE_ISSUED: sender.on_credit_note_issued},
        on_idle=sender.tick,
    )
