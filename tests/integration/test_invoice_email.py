"""Invoices by email against a real SMTP server on 127.0.0.1 (aiosmtpd, with STARTTLS and login
where the test says so), the real broker and PostgreSQL: ``cdrflow run sender`` consumes
invoice-issued and mails the invoice once, with its PDF (read back with pypdf); a relay that
refuses the message leaves the delivery failed until its retry, then sends it once."""

from __future__ import annotations

import email
import email.policy
import io
import signal
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from pypdf import PdfReader
from sqlalchemy import select

from cdrflow.bus import EventProducer, Topic, topic_name
from cdrflow.db import Database
from cdrflow.db.models import Customer, InvoiceDelivery
from cdrflow.localkafka import free_port
from cdrflow_app.orchestrate import spawn_service, stop_processes
from cdrflow.runtime import Runtime
from cdrflow.settings import Settings
from services.sender.delivery import FAILED, SENDING, SENT, UNCERTAIN, Relay
from services.sender.service import Sender
from tests.integration.conftest import wait_until
from tests.peers.servers import self_signed_cert
from tests.schemas import validate_event
from tests.peers.smtp import Inbox, smtp_relay
from tests.unit.test_delivery import NUMBER, SELLER, issue_invoice, issued_event

USER, PASSWORD = "cdrflow", "relay-s3cret"


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    """A plain SMTP relay on 127.0.0.1 (as a relay on the same host or network is often run)."""
    with smtp_relay() as relay:
        yield relay


@pytest.fixture
def tls_relay(tmp_path: Path) -> Iterator[tuple[Inbox, Relay]]:
    """A relay that requires STARTTLS and a login, and the client side that trusts its certificate."""
    cert, key = self_signed_cert(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    def authenticate(server, session, envelope, mechanism, auth_data):  # noqa: ANN001, ANN202
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == \
            (USER.encode(), PASSWORD.encode())
        return AuthResult(success=ok, handled=False)

    handler, port = Inbox(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, tls_context=server_tls, require_starttls=True,
                            authenticator=authenticate, auth_required=True, auth_require_tls=True)
    controller.start()
    client_tls = ssl.create_default_context(cafile=str(cert))
    try:
        yield handler, Relay("127.0.0.1", port, starttls=True, username=USER, password=PASSWORD,
                             tls_context=client_tls)
    finally:
        controller.stop()


def prepare(settings: Settings) -> Database:
    """The customer's billing email set and the invoice issued, as the billing run leaves them."""
    database = Database(settings.effective_database_url)
    with database.transaction() as session:
        session.get(Customer, "ACME").billing_email = "accounts@acme.example"
        issue_invoice(session)
    return database


def pdf_text(message: email.message.EmailMessage) -> str:
    [pdf] = [p for p in message.iter_attachments() if p.get_content_type() == "application/pdf"]
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.get_content())).pages)


def test_the_sender_service_mails_an_issued_invoice_once_with_its_pdf(settings, inbox, tmp_path):
    s = settings.model_copy(update=SELLER | {"smtp_host": "127.0.0.1", "smtp_port": inbox[1]})
    database = prepare(s)
    event = issued_event()
    validate_event(event.to_dict())
    producer = EventProducer(s.bootstrap)
    for _ in range(2):  # at-least-once: the event arrives twice
        producer.send(topic_name(s.namespace, Topic.INVOICE_ISSUED), "ACME", event)
    producer.flush()
    proc = spawn_service("sender", s, str(tmp_path))
    try:
        wait_until("the invoice email", lambda: inbox[0].messages, timeout=90)

        def sent() -> InvoiceDelivery | None:
            with database.transaction() as session:
                d = session.scalars(select(InvoiceDelivery)).all()
                return d[0] if len(d) == 1 and d[0].status == SENT else None

        delivery = wait_until("the delivery recorded sent", sent, timeout=30)
    finally:
        stop_processes({"sender": proc})
        database.dispose()
    [message] = inbox[0].messages
    assert message["Message-ID"] == delivery.message_id == "<INV-000001.1@northernvoice.example>"
    assert message["To"] == "accounts@acme.example" and message["From"] == "billing@northernvoice.example"
    text = pdf_text(message)
    assert NUMBER in text and "£18.00" in text
    assert sorted(p.get_filename() for p in message.iter_attachments()) == ["INV-000001-calls.csv",
                                                                            "INV-000001.pdf"]


def test_a_refused_mail_is_retried_after_its_backoff_and_then_sent_once(settings, tls_relay):
    s = settings.model_copy(update=SELLER)
    database = prepare(s)
    database.dispose()
    handler, relay = tls_relay
    now = [datetime.now(UTC)]
    runtime = Runtime(s, "sender")
    sender = Sender(runtime, relay=relay, clock=lambda: now[0])
    try:
        with runtime.database.transaction() as session:
            list(sender.on_invoice_issued(issued_event(), session))
        handler.refusal = "451 4.3.0 try again later"
        assert sender.deliver_due() == 0
        with runtime.database.transaction() as session:
            [delivery] = session.scalars(select(InvoiceDelivery)).all()
        assert (delivery.status, delivery.attempts) == (FAILED, 1)
        assert delivery.last_error.endswith("refused the message: 451 4.3.0 try again later")
        assert delivery.next_attempt_at == now[0] + timedelta(seconds=60)

        handler.refusal = None
        now[0] += timedelta(seconds=59)
        assert sender.deliver_due() == 0  # not yet due
        now[0] += timedelta(seconds=1)
        assert sender.deliver_due() == 1
        assert sender.deliver_due() == 0
        with runtime.database.transaction() as session:
            [delivery] = session.scalars(select(InvoiceDelivery)).all()
        assert (delivery.status, delivery.attempts, delivery.last_error) == (SENT, 2, None)
        assert handler.refused == 1
        [message] = handler.messages
        assert message["Message-ID"] == delivery.message_id
        text = pdf_text(message)
        assert NUMBER in text and "£18.00" in text
    finally:
        runtime.database.dispose()


def test_a_sender_killed_before_recording_a_handed_over_mail_never_mails_it_again(settings, inbox, tmp_path):
    """kill -9 while the relay holds its answer to the message: the delivery is left ``sending``;
    the restarted sender marks it ``uncertain`` and mails nothing."""
    s = settings.model_copy(update=SELLER | {"smtp_host": "127.0.0.1", "smtp_port": inbox[1]})
    database = prepare(s)
    producer = EventProducer(s.bootstrap)
    producer.send(topic_name(s.namespace, Topic.INVOICE_ISSUED), "ACME", issued_event())
    producer.flush()
    inbox[0].stalling = True

    def status() -> str | None:
        with database.transaction() as session:
            return session.scalar(select(InvoiceDelivery.status))

    proc = spawn_service("sender", s, str(tmp_path))
    try:
        wait_until("the mail handed to the relay", lambda: inbox[0].messages, timeout=90)
        assert status() == SENDING
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        inbox[0].stalling = False
        proc = spawn_service("sender", s, str(tmp_path))
        wait_until("the delivery marked uncertain", lambda: status() == UNCERTAIN, timeout=60)
        time.sleep(3)  # a sender that would resend has had its chance
    finally:
        stop_processes({"sender": proc})
    with database.transaction() as session:
        [delivery] = session.scalars(select(InvoiceDelivery)).all()
    database.dispose()
    assert (delivery.status, delivery.attempts) == (UNCERTAIN, 1)
    assert "may or may not have gone" in delivery.last_error
    assert len(inbox[0].messages) == 1
