"""Email delivery of invoices (SQLite, a real aiosmtpd server on 127.0.0.1 as the relay): the
message, the backoff, one delivery per issued invoice, at most once across a crash, and the
operator's resend over the admin API and the CLI."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from starlette.testclient import TestClient

import services.sender.commands
from cdrflow.db.models import Call, CreditNote, Customer, Invoice, InvoiceDelivery
from cdrflow.db.models import Charge as Line
from cdrflow.events import Event, EventType
from cdrflow.localkafka import free_port
from services.admin.app import create_app
from services.sender.commands import DeliveryClient, invoices_deliveries, invoices_send
from services.sender.delivery import (
    FAILED, NO_BILLING_EMAIL, QUEUED, SENDING, SENT, UNCERTAIN, Relay, build_message, claim, due_deliveries,
    record_failed, retry_delay,
)
from services.sender.service import Sender, document_mail
from tests.schemas import validate_event
from tests.peers.smtp import Inbox, smtp_relay
from tests.unit.test_handlers import handle
from tests.unit.test_handlers import runtime as base_runtime  # noqa: F401  (fixture)
from tests.authhelp import authed

NUMBER = "INV-000001"
ISSUED_AT = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
SELLER = {"seller_name": "Northern Voice Ltd", "seller_address": "1 Mill Lane|Leeds LS1 1AA",
          "seller_vat_number": "GB123456789", "seller_email": "accounts@northernvoice.example",
          "mail_from": "billing@northernvoice.example", "smtp_starttls": False}


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    """A real SMTP server on 127.0.0.1: (its inbox, its port)."""
    with smtp_relay() as relay:
        yield relay


@pytest.fixture
def runtime(base_runtime, inbox):  # noqa: F811
    """The handlers' runtime with seller details and the relay at the test's SMTP server."""
    base_runtime.settings = base_runtime.settings.model_copy(
        update=SELLER | {"smtp_host": "127.0.0.1", "smtp_port": inbox[1]})
    with base_runtime.database.transaction() as session:
        session.get(Customer, "ACME").billing_email = "accounts@acme.example"
    return base_runtime


def issue_invoice(session, number: str = NUMBER, customer: str = "ACME") -> Invoice:
    """An issued invoice as a billing run stores it: two lines in pennies, 20% VAT, one call."""
    invoice = Invoice(number=number, run_id="6f1c1a52-9a53-4d55-9d7f-2c0f6f0f5a11", customer=customer,
                      period_start=date(2026, 10, 1), period_end=date(2026, 11, 1), issued_at=ISSUED_AT,
                      issued_on=date(2026, 11, 1), due_on=date(2026, 12, 1), currency="GBP",
                      net=Decimal("15.00"), tax=Decimal("3.00"), total=Decimal("18.00"), calls_csv=None)
    session.add(invoice)
    session.flush()
    session.add_all([Line(invoice_id=invoice.id, description="Call Charges", quantity=1, amount=Decimal("3.00")),
                     Line(invoice_id=invoice.id, description="SIP trunk channels", quantity=2,
                          amount=Decimal("12.00"), kind="recurring")])
    session.add(Call(file_id="0b7e7a52-5d3c-4a51-9d59-2f7bd1a0c7e1", row=2, carrier="gamma", direction="outbound",
                     cli="441632960001", dialled="=HYPERLINK(\"http://x\")", start=datetime(2026, 10, 5, 9, tzinfo=UTC),
                     duration=125, customer=customer, destination="UK", band="peak", billable_seconds=125,
                     charge=Decimal("3.0000"), status="rated", invoice_id=invoice.id))
    return invoice


def issued_event(number: str = NUMBER, customer: str = "ACME") -> Event:
    return Event(type=EventType.INVOICE_ISSUED, source="cdrflow/invoicer", subject=number, id=f"issued-{number}",
                 data={"invoice_number": number, "run_id": "6f1c1a52-9a53-4d55-9d7f-2c0f6f0f5a11",
                       "customer": customer, "currency": "GBP", "period": "2026-10", "period_start": "2026-10-01",
                       "period_end": "2026-11-01", "issued_at": ISSUED_AT.isoformat(), "issued_on": "2026-11-01",
                       "due_on": "2026-12-01",
                       "lines": [{"description": "Call Charges", "quantity": 1, "amount": "3.00",
                                  "tax_code": "standard", "kind": "calls"},
                                 {"description": "SIP trunk channels", "quantity": 2, "amount": "12.00",
                                  "tax_code": "standard", "kind": "recurring"}],
                       "net": "15.00", "tax": "3.00", "total": "18.00", "calls_csv": "0" * 64})


def deliveries(runtime) -> list[InvoiceDelivery]:
    with runtime.database.transaction() as session:
        return list(session.scalars(select(InvoiceDelivery).order_by(InvoiceDelivery.id)))


# --- the message -----------------------------------------------------------------------------


def test_message_carries_the_pdf_and_the_calls_csv_under_the_deliverys_message_id(runtime):
    with runtime.database.transaction() as session:
        issue_invoice(session)
        mail = document_mail(session, NUMBER, runtime.settings)
    message = build_message(mail, to_address="accounts@acme.example", mail_from="billing@northernvoice.example",
                            message_id="<INV-000001.1@northernvoice.example>", now=ISSUED_AT)
    parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert parsed["Message-ID"] == "<INV-000001.1@northernvoice.example>"
    assert parsed["Subject"] == "Invoice INV-000001 from Northern Voice Ltd: £18.00 due"
    assert parsed["To"] == "accounts@acme.example"
    body = parsed.get_body(("plain",)).get_content()
    assert "Dear Acme Widgets Ltd" in body and "1 Oct 2026 – 31 Oct 2026" in body and "1 Dec 2026" in body
    parts = {p.get_filename(): p for p in parsed.iter_attachments()}
    assert sorted(parts) == ["INV-000001-calls.csv", "INV-000001.pdf"]
    assert parts["INV-000001.pdf"].get_content_type() == "application/pdf"
    assert parts["INV-000001.pdf"].get_content().startswith(b"%PDF")
    csv = parts["INV-000001-calls.csv"].get_content()
    csv = csv if isinstance(csv, str) else csv.decode()
    assert "2026-10-05,10:00:00,441632960001" in csv  # 09:00 UTC is 10:00 in London (BST)
    assert "'=HYPERLINK" in csv  # a cell a spreadsheet would run is neutralised


def test_a_credit_note_is_mailed_with_its_pdf_under_its_own_number(runtime, inbox):
    with runtime.database.transaction() as session:
        invoice = issue_invoice(session)
        invoice.status = "credited"
        session.add(CreditNote(number="CN-000001", invoice_id=invoice.id, issued_at=ISSUED_AT, operator="alice",
                               reason="wrong tariff", net=Decimal("-15.00"), tax=Decimal("-3.00"),
                               total=Decimal("-18.00")))
    event = Event(type=EventType.CREDIT_NOTE_ISSUED, source="cdrflow/invoicer", subject="CN-000001", data={
        "credit_note_number": "CN-000001", "credited_invoice_number": NUMBER, "customer": "ACME", "currency": "GBP",
        "period_start": "2026-10-01", "period_end": "2026-11-01", "issued_at": ISSUED_AT.isoformat(),
        "net": "15.00", "tax": "3.00", "total": "18.00", "operator": "alice", "reason": "wrong tariff"})
    sender = Sender(runtime)
    handle(runtime, sender.on_credit_note_issued, event)
    assert sender.tick() == 1
    [message] = inbox[0].messages
    assert message["Subject"] == "Credit note CN-000001 from Northern Voice Ltd: £18.00 credited"
    assert message["Message-ID"] == "<CN-000001.1@northernvoice.example>"
    assert [p.get_filename() for p in message.iter_attachments()] == ["CN-000001.pdf"]
    assert "crediting invoice INV-000001 in full" in message.get_body(("plain",)).get_content()


# --- backoff ---------------------------------------------------------------------------------


def test_retry_waits_60s_then_doubles_after_each_failed_attempt():
    assert [retry_delay(n, 60).total_seconds() for n in range(1, 8)] == [60, 120, 240, 480, 960, 1920, 3840]


def test_a_failed_delivery_is_due_again_after_its_backoff_and_not_after_the_last_attempt(runtime):
    with runtime.database.transaction() as session:
        issue_invoice(session)
    handle(runtime, Sender(runtime).on_invoice_issued, issued_event())
    now = ISSUED_AT
    for attempt in range(1, 4):
        with runtime.database.transaction() as session:
            [due] = due_deliveries(session, now, max_attempts=3)
            assert claim(session, due) == attempt
            retry_at = record_failed(session, due.id, attempt, "451 try later", now, max_attempts=3,
                                     backoff_seconds=60)
        with runtime.database.transaction() as session:
            if attempt < 3:
                assert retry_at == now + timedelta(seconds=60 * 2 ** (attempt - 1))
                assert due_deliveries(session, retry_at - timedelta(seconds=1), max_attempts=3) == []
                now = retry_at
            else:
                assert retry_at is None
                assert due_deliveries(session, now + timedelta(days=30), max_attempts=3) == []
    [delivery] = deliveries(runtime)
    assert (delivery.status, delivery.attempts) == (FAILED, 3)
    assert "gave up after 3 attempts" in delivery.last_error and "cdrflow invoices send" in delivery.last_error


# --- queueing --------------------------------------------------------------------------------


def test_a_repeated_invoice_issued_event_queues_one_delivery(runtime):
    with runtime.database.transaction() as session:
        issue_invoice(session)
    sender = Sender(runtime)
    validate_event(issued_event().to_dict())
    assert handle(runtime, sender.on_invoice_issued, issued_event()) == []
    handle(runtime, sender.on_invoice_issued, issued_event())
    handle(runtime, Sender(runtime).on_invoice_issued, issued_event())  # after a restart too
    [delivery] = deliveries(runtime)
    assert (delivery.document_number, delivery.to_address, delivery.status, delivery.attempts) == \
        (NUMBER, "accounts@acme.example", QUEUED, 0)
    assert delivery.message_id == "<INV-000001.1@northernvoice.example>"
    assert delivery.requested_by == "sender"


def test_a_customer_without_billing_email_gets_a_failed_delivery_saying_so(runtime, inbox):
    with runtime.database.transaction() as session:
        session.get(Customer, "ACME").billing_email = None
        issue_invoice(session)
    sender = Sender(runtime)
    handle(runtime, sender.on_invoice_issued, issued_event())
    assert sender.tick() == 0
    [delivery] = deliveries(runtime)
    assert (delivery.status, delivery.last_error, delivery.attempts, delivery.to_address) == \
        (FAILED, NO_BILLING_EMAIL, 0, "")
    assert inbox[0].messages == []


def test_an_unusable_billing_email_is_a_failed_delivery_saying_why(runtime):
    with runtime.database.transaction() as session:
        session.get(Customer, "ACME").billing_email = "accounts at acme"
        issue_invoice(session)
    handle(runtime, Sender(runtime).on_invoice_issued, issued_event())
    [delivery] = deliveries(runtime)
    assert delivery.status == FAILED
    assert delivery.last_error == ("customer's billing email is unusable: 'accounts at acme' is not an email "
                                   "address (expected local@domain, nothing else)")


# --- sending, at most once -------------------------------------------------------------------


def test_a_due_delivery_is_sent_once_and_recorded_sent(runtime, inbox):
    with runtime.database.transaction() as session:
        issue_invoice(session)
    sender = Sender(runtime)
    handle(runtime, sender.on_invoice_issued, issued_event())
    assert sender.tick() == 1
    assert sender.deliver_due() == 0
    [delivery] = deliveries(runtime)
    assert (delivery.status, delivery.attempts, delivery.last_error) == (SENT, 1, None)
    assert delivery.sent_at is not None
    [message] = inbox[0].messages
    assert message["Message-ID"] == delivery.message_id


def test_a_delivery_found_sending_at_start_up_becomes_uncertain_and_is_not_resent(runtime, inbox):
    with runtime.database.transaction() as session:
        issue_invoice(session)
    handle(runtime, Sender(runtime).on_invoice_issued, issued_event())
    with runtime.database.transaction() as session:  # the sender was killed after claiming it
        [due] = due_deliveries(session, datetime.now(UTC), max_attempts=8)
        assert claim(session, due) == 1
    restarted = Sender(runtime)
    assert restarted.tick() == 0
    assert restarted.deliver_due() == 0
    [delivery] = deliveries(runtime)
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == (UNCERTAIN, 1, None)
    assert "may or may not have gone" in delivery.last_error
    assert "cdrflow invoices send INV-000001" in delivery.last_error
    assert inbox[0].messages == []


def test_a_relay_refusing_data_leaves_the_delivery_failed_for_a_retry(runtime, inbox):
    with runtime.database.transaction() as session:
        issue_invoice(session)
    sender = Sender(runtime)
    handle(runtime, sender.on_invoice_issued, issued_event())
    inbox[0].refusal = "451 4.3.0 mailbox busy"
    before = datetime.now(UTC)
    assert sender.deliver_due() == 0
    [delivery] = deliveries(runtime)
    assert (delivery.status, delivery.attempts) == (FAILED, 1)
    assert delivery.last_error == "SMTP relay 127.0.0.1:%d refused the message: 451 4.3.0 mailbox busy" % inbox[1]
    assert before + timedelta(seconds=59) < delivery.next_attempt_at <= datetime.now(UTC) + timedelta(seconds=60)
    assert sender.deliver_due() == 0  # not due again before its backoff
    assert inbox[0].refused == 1


def test_a_relay_that_is_not_there_is_a_failed_attempt_not_an_uncertain_one(runtime):
    with runtime.database.transaction() as session:
        issue_invoice(session)
    sender = Sender(runtime, relay=Relay("127.0.0.1", free_port(), starttls=False, timeout=5))
    handle(runtime, sender.on_invoice_issued, issued_event())
    assert sender.deliver_due() == 0
    [delivery] = deliveries(runtime)
    assert delivery.status == FAILED and "can't connect to the SMTP relay" in delivery.last_error


def test_an_invoice_that_cannot_be_rendered_fails_its_attempt_with_the_reason(runtime, inbox):
    runtime.settings = runtime.settings.model_copy(update={"seller_name": ""})
    with runtime.database.transaction() as session:
        issue_invoice(session)
    sender = Sender(runtime)
    handle(runtime, sender.on_invoice_issued, issued_event())
    assert sender.deliver_due() == 0
    [delivery] = deliveries(runtime)
    assert delivery.status == FAILED and delivery.attempts == 1
    assert delivery.last_error.startswith("can't make the mail: the seller's name is not set")
    assert inbox[0].messages == []


# --- the operator's resend: admin API and CLI ------------------------------------------------


@pytest.fixture
def api(runtime):
    client = authed(TestClient(create_app(runtime)), runtime)  # not entered: no lifespan, so no background relay
    yield client
    client.close()


def test_resend_over_the_api_is_a_new_delivery_with_its_own_message_id(runtime, inbox, api):
    with runtime.database.transaction() as session:
        issue_invoice(session)
    sender = Sender(runtime)
    handle(runtime, sender.on_invoice_issued, issued_event())
    sender.deliver_due()
    reply = api.post(f"/invoices/{NUMBER}/send", json={"to": "finance@acme.example"},
                     headers={"x-operator": "alice"})
    assert reply.status_code == 202, reply.text
    assert (reply.json()["message_id"], reply.json()["status"], reply.json()["requested_by"]) == \
        ("<INV-000001.2@northernvoice.example>", QUEUED, "alice")
    assert sender.deliver_due() == 1
    assert [m["To"] for m in inbox[0].messages] == ["accounts@acme.example", "finance@acme.example"]
    assert [m["Message-ID"] for m in inbox[0].messages] == ["<INV-000001.1@northernvoice.example>",
                                                             "<INV-000001.2@northernvoice.example>"]
    listed = api.get(f"/invoices/{NUMBER}/deliveries").json()
    assert [(d["status"], d["requested_by"]) for d in listed] == [(SENT, "sender"), (SENT, "alice")]
    assert [d["id"] for d in api.get("/deliveries", params={"status": "sent"}).json()] == \
        [listed[1]["id"], listed[0]["id"]]


def test_resend_is_refused_clearly_for_unknown_invoices_and_bad_addresses(runtime, api):
    with runtime.database.transaction() as session:
        issue_invoice(session)
        session.get(Customer, "ACME").billing_email = None
    unknown = api.post("/invoices/INV-999999/send", json={})
    assert (unknown.status_code, unknown.json()["error"]) == \
        (404, "no invoice or credit note INV-999999 (see 'cdrflow invoices list')")
    bad = api.post(f"/invoices/{NUMBER}/send", json={"to": "not-an-address"})
    assert bad.status_code == 422 and "'not-an-address' is not an email address" in bad.json()["error"]
    nowhere = api.post(f"/invoices/{NUMBER}/send", json={})
    assert nowhere.status_code == 422 and "customer ACME has no billing email" in nowhere.json()["error"]
    assert api.get("/deliveries", params={"status": "lost"}).status_code == 422
    assert deliveries(runtime) == []


def test_invoices_send_and_deliveries_from_the_command_line(runtime, api, monkeypatch):
    client = DeliveryClient("http://testserver")
    client._http = api  # Starlette's TestClient is an httpx.Client
    monkeypatch.setattr(services.sender.commands, "_client", lambda ctx: client)
    with runtime.database.transaction() as session:
        issue_invoice(session)
    sent = CliRunner().invoke(invoices_send, [NUMBER, "--to", "finance@acme.example"], obj=runtime.settings)
    assert sent.exit_code == 0, sent.output
    assert sent.output.splitlines()[-1].startswith(f"{NUMBER}: delivery 1 to finance@acme.example queued "
                                  "(<INV-000001.1@northernvoice.example>)")
    listed = CliRunner().invoke(invoices_deliveries, [NUMBER], obj=runtime.settings)
    assert listed.exit_code == 0, listed.output
    header, row = listed.output.splitlines()[-2:]
    assert header.split() == ["ID", "DOCUMENT", "STATUS", "TO", "ATTEMPTS", "SENT", "NEXT", "TRY", "REQUESTED",
                              "BY", "LAST", "ERROR"]
    assert row.split()[:5] == ["1", NUMBER, QUEUED, "finance@acme.example", "0"]
    as_json = CliRunner().invoke(invoices_deliveries, ["--json"], obj=runtime.settings)
    assert '"status": "queued"' in as_json.output
    both = CliRunner().invoke(invoices_deliveries, [NUMBER, "--status", "failed"], obj=runtime.settings)
    assert both.exit_code == 2 and "give NUMBER or --status, not both" in both.output


def test_sending_state_is_claimed_once_by_two_senders(runtime):
    with runtime.database.transaction() as session:
        issue_invoice(session)
    handle(runtime, Sender(runtime).on_invoice_issued, issued_event())
    with runtime.database.transaction() as session:
        [seen] = due_deliveries(session, datetime.now(UTC), max_attempts=8)
    with runtime.database.transaction() as session:
        assert claim(session, seen) == 1
    with runtime.database.transaction() as session:
        assert claim(session, seen) is None  # the second sender saw it queued too, but it is taken
    assert [(d.status, d.attempts) for d in deliveries(runtime)] == [(SENDING, 1)]




def test_the_default_sender_address_is_one_the_sender_accepts():
    """`cdrflow up` starts the sender with the default settings: its From must pass its own check."""
    from cdrflow.settings import Settings
    from services.sender.delivery import checked_address, mail_domain

    assert checked_address(Settings().mail_from) == "billing@localhost"
    assert mail_domain(Settings().mail_from) == "localhost"
