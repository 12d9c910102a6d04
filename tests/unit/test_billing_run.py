"""Billing runs over SQLite (no broker): the invoicer's run-closed handler issues each invoice with
its lines, VAT, gap-free number, calls CSV and invoice-issued event. Every expected figure is
worked out here from the input, by hand, not read back from what the code produced."""

import io
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import orjson
import pytest
from pypdf import PdfReader
from sqlalchemy import func, select

from cdrflow.db import migrate
from cdrflow.db.models import (
    BillingTransaction,
    Call,
    CarrierTransaction,
    Carrier,
    CreditNote,
    Customer,
    CustomerCharge,
    File,
    Invoice,
    NumberSequence,
    OutboxEntry,
)
from cdrflow.errors import ConfigurationError
from cdrflow.events import Event, EventType
from cdrflow.runtime import Runtime
from cdrflow.settings import Settings
from services.invoicer.billing import CREDIT_NOTE_SEQUENCE, INVOICE_SEQUENCE, issue_invoice, next_number
from services.invoicer.periods import Period
from services.invoicer.render import credit_note_document, invoice_calls_csv, invoice_document, invoice_pdf
from services.invoicer.service import Invoicer
from tests.schemas import validate_event

OCTOBER = Period(date(2026, 10, 1), date(2026, 11, 1))
NOVEMBER = Period(date(2026, 11, 1), date(2026, 12, 1))
EVIL = '=HYPERLINK("http://evil","x")'


@pytest.fixture
def runtime(tmp_path):
    settings = Settings(data_dir=tmp_path, seller_name="Acme Telecom Ltd", seller_address="1 High St|Leeds\nLS1 1AA",
                        seller_vat_number="GB123456789", seller_email="billing@acme.example")
    migrate(settings.effective_database_url)
    rt = Runtime(settings, "test")
    with rt.database.transaction() as session:
        session.add(Carrier(code="gamma", name="Gamma"))
        session.add(File(id="f-cdr", fingerprint="0" * 64, carrier="gamma", kind="cdr", period="daily",
                         direction="outbound", original_name="gamma.csv", size=1, channel="upload",
                         received_at=datetime.now(UTC), status="rated", updated_at=datetime.now(UTC)))
        for code, tax_code, schedule in [("ACME", "standard", "monthly"), ("ZERO", "zero", "monthly"),
                                         ("IDLE", "standard", "monthly"), ("WEEK", "standard", "weekly")]:
            session.add(Customer(code=code, name=f"{code} Ltd", tax_code=tax_code, billing_schedule=schedule,
                                 address="2 Low Rd|York", payment_terms_days=14))
    yield rt
    rt.database.dispose()


_rows = iter(range(1, 1_000_000))


def add_call(rt, customer, charge, start=datetime(2026, 10, 10, 12, tzinfo=UTC), cli="441130000001", **extra):
    with rt.database.transaction() as session:
        session.add(Call(file_id="f-cdr", row=next(_rows), carrier="gamma", direction="outbound", cli=cli,
                         dialled="442070000000", start=start, duration=61, answered=True, customer=customer,
                         destination="UK", band="peak", billable_seconds=120, charge=Decimal(charge),
                         status="rated", **extra))


def add_fee(rt, customer, price, *, quantity=1, description="Line rental", charge_on=date(2026, 10, 1),
            status="priced"):
    with rt.database.transaction() as session:
        row = next(_rows)
        t = CarrierTransaction(file_id="f-cdr", row=row, carrier="gamma", quantity=quantity, pro_rata=False,
                               amount=Decimal("1.00"))
        session.add(t)
        session.flush()
        session.add(BillingTransaction(carrier_transaction_id=t.id, file_id="f-cdr", customer=customer,
                                       status=status, description=description, quantity=quantity,
                                       price=None if price is None else Decimal(price), charge_on=charge_on,
                                       updated_at=datetime.now(UTC)))


def add_charge(rt, customer, description, amount, frequency, start, *, tax_code=None, quantity=1):
    with rt.database.transaction() as session:
        session.add(CustomerCharge(customer=customer, description=description, amount=Decimal(amount),
                                   quantity=quantity, frequency=frequency, start=start, tax_code=tax_code,
                                   created_at=datetime.now(UTC), created_by="test"))


def close_run(rt, customer, period=OCTOBER, run_id=None):
    event = Event(type=EventType.RUN_CLOSED, source="cdrflow/admin", subject=f"{customer}/{period.label}", data={
        "run_id": run_id or str(uuid.uuid4()), "customer": customer, "period": period.label,
        "period_start": period.start.isoformat(), "period_end": period.end.isoformat(), "trigger": "manual"})
    validate_event(event.to_dict())
    with rt.database.transaction() as session:
        assert list(Invoicer(rt).on_run_closed(event, session)) == []


def invoice_of(session, customer, period=OCTOBER):
    return session.scalar(select(Invoice).where(Invoice.customer == customer, Invoice.period_start == period.start))


def lines_of(invoice):
    return [(c.description, c.quantity, c.amount, c.tax_code, c.kind) for c in invoice.charges]


def issued_events(rt):
    with rt.database.transaction() as session:
        return [orjson.loads(e.payload) for e in session.scalars(select(OutboxEntry).order_by(OutboxEntry.id))]


# --- lines and figures ---------------------------------------------------------------------


def test_call_charges_are_summed_exactly_and_rounded_once(runtime):
    for charge in ("0.123450", "0.000050", "1.004999"):  # each rounded first: 0.12 + 0.00 + 1.00 = 1.12
        add_call(runtime, "ACME", charge)
    close_run(runtime, "ACME")
    with runtime.database.transaction() as session:
        invoice = invoice_of(session, "ACME")
        # 1.128499 → 1.13; VAT 20% of 1.13 = 0.226 → 0.23
        assert lines_of(invoice) == [("Call Charges", 3, Decimal("1.13"), "standard", "calls")]
        assert (invoice.net, invoice.tax, invoice.total) == (Decimal("1.13"), Decimal("0.23"), Decimal("1.36"))
        assert invoice.currency == "GBP" and invoice.document is None  # the PDF is not made in the run


def test_vat_is_worked_out_on_the_net_of_each_rate_not_per_line(runtime):
    for charge in ("0.123450", "0.000050", "1.004999"):
        add_call(runtime, "ACME", charge)  # 1.13
    add_fee(runtime, "ACME", "12.6300", quantity=3, description="SIP trunk channels")
    add_charge(runtime, "ACME", "Printed directory", "5.00", "once", date(2026, 10, 5), tax_code="zero")
    close_run(runtime, "ACME")
    with runtime.database.transaction() as session:
        invoice = invoice_of(session, "ACME")
        assert lines_of(invoice) == [
            ("Call Charges", 3, Decimal("1.13"), "standard", "calls"),
            ("SIP trunk channels", 3, Decimal("12.63"), "standard", "fee"),
            ("Printed directory 2026-10-05", 1, Decimal("5.00"), "zero", "one-off")]
        # standard net 13.76 × 20% = 2.752 → 2.75 (per line: 0.23 + 2.53 = 2.76); zero-rated 5.00 adds none
        assert (invoice.net, invoice.tax, invoice.total) == (Decimal("18.76"), Decimal("2.75"), Decimal("21.51"))


def test_a_zero_rated_customer_pays_no_vat(runtime):
    add_call(runtime, "ZERO", "2.500000")
    close_run(runtime, "ZERO")
    with runtime.database.transaction() as session:
        invoice = invoice_of(session, "ZERO")
        assert lines_of(invoice) == [("Call Charges", 1, Decimal("2.50"), "zero", "calls")]
        assert (invoice.net, invoice.tax, invoice.total) == (Decimal("2.50"), Decimal(0), Decimal("2.50"))


def test_only_outstanding_calls_before_the_period_end_are_claimed(runtime):
    add_call(runtime, "ACME", "1.000000", start=datetime(2026, 9, 3, tzinfo=UTC))  # late call of September: in
    add_call(runtime, "ACME", "2.000000", start=datetime(2026, 10, 31, 23, 59, tzinfo=UTC))  # 31 Oct, GMT: in
    add_call(runtime, "ACME", "4.000000", start=datetime(2026, 11, 1, tzinfo=UTC))  # November: out
    add_call(runtime, "ACME", "8.000000", set_aside=True)  # an overlapping call set aside: out
    add_call(runtime, "IDLE", "16.000000")  # another customer's: out
    close_run(runtime, "ACME")
    with runtime.database.transaction() as session:
        assert lines_of(invoice_of(session, "ACME")) == [("Call Charges", 2, Decimal("3.00"), "standard", "calls")]
        assert session.scalar(select(func.count()).select_from(Call).where(Call.invoice_id.is_(None))) == 3


def test_a_priced_fee_is_a_line_rounded_once_and_billed_once(runtime):
    add_fee(runtime, "ACME", "12.3456", quantity=2)  # the whole line's price → 12.35
    add_fee(runtime, "ACME", "-3.3350", description="Credit: line rental")  # a credit, half away from zero: -3.34
    add_fee(runtime, "ACME", "7.0000", charge_on=date(2026, 11, 1))  # November's: not yet
    add_fee(runtime, "ACME", None, status="unpriced")  # in reconciliation: never billed as it is
    close_run(runtime, "ACME")
    close_run(runtime, "ACME", NOVEMBER)
    with runtime.database.transaction() as session:
        assert lines_of(invoice_of(session, "ACME")) == [
            ("Line rental", 2, Decimal("12.35"), "standard", "fee"),
            ("Credit: line rental", 1, Decimal("-3.34"), "standard", "fee")]
        assert lines_of(invoice_of(session, "ACME", NOVEMBER)) == [
            ("Line rental", 1, Decimal("7.00"), "standard", "fee")]
        # 12.35 - 3.34 = 9.01, VAT 1.802 → 1.80
        assert invoice_of(session, "ACME").total == Decimal("10.81")


def test_a_recurring_charge_is_billed_in_advance_with_a_pro_rata_first_period(runtime):
    add_charge(runtime, "ACME", "Hosted PBX", "30.00", "monthly", date(2026, 10, 16))
    close_run(runtime, "ACME")
    close_run(runtime, "ACME", NOVEMBER)
    with runtime.database.transaction() as session:
        october, november = invoice_of(session, "ACME"), invoice_of(session, "ACME", NOVEMBER)
        # 16..31 Oct is 16 of 31 days: 30.00 × 16 / 31 = 15.4838… → 15.48; November in advance, in full
        assert [(c.description, c.amount, c.kind, c.covered_from, c.covered_to) for c in october.charges] == [
            ("Hosted PBX 2026-10-16..2026-10-31 (16 of 31 days)", Decimal("15.48"), "recurring",
             date(2026, 10, 16), date(2026, 11, 1)),
            ("Hosted PBX 2026-11-01..2026-11-30", Decimal("30.00"), "recurring", date(2026, 11, 1), date(2026, 12, 1))]
        assert [(c.description, c.amount) for c in november.charges] == [
            ("Hosted PBX 2026-12-01..2026-12-31", Decimal("30.00"))]
        charge = session.scalar(select(CustomerCharge))
        assert charge.billed_until == date(2027, 1, 1)
        assert {c.customer_charge_id for c in october.charges + november.charges} == {charge.id}


def test_a_one_off_charge_is_billed_once(runtime):
    add_charge(runtime, "ACME", "Installation", "99.00", "once", date(2026, 10, 20), quantity=2)
    close_run(runtime, "ACME")
    close_run(runtime, "ACME", NOVEMBER)
    with runtime.database.transaction() as session:
        assert lines_of(invoice_of(session, "ACME")) == [
            ("Installation 2026-10-20", 2, Decimal("198.00"), "standard", "one-off")]
        assert invoice_of(session, "ACME", NOVEMBER) is None  # nothing else to bill in November


def test_a_weekly_customer_is_billed_for_its_week(runtime):
    week = Period(date(2026, 11, 16), date(2026, 11, 23))  # 2026-W47
    add_call(runtime, "WEEK", "0.500000", start=datetime(2026, 11, 22, 23, 59, tzinfo=UTC))
    add_call(runtime, "WEEK", "0.700000", start=datetime(2026, 11, 23, tzinfo=UTC))  # next week's
    close_run(runtime, "WEEK", week)
    with runtime.database.transaction() as session:
        assert lines_of(invoice_of(session, "WEEK", week)) == [("Call Charges", 1, Decimal("0.50"), "standard",
                                                                 "calls")]
    [event] = issued_events(runtime)
    assert (event["data"]["period"], event["data"]["period_end"]) == ("2026-W47", "2026-11-23")


# --- numbers and runs ----------------------------------------------------------------------


def test_nothing_to_bill_makes_no_invoice_and_uses_no_number(runtime):
    close_run(runtime, "IDLE")
    add_call(runtime, "ACME", "1.000000")
    close_run(runtime, "ACME")
    with runtime.database.transaction() as session:
        assert invoice_of(session, "IDLE") is None
        assert invoice_of(session, "ACME").number == "INV-000001"
    assert [e["data"]["customer"] for e in issued_events(runtime)] == ["ACME"]


def test_an_empty_run_is_invoiced_when_the_settings_say_so(runtime, tmp_path):
    with runtime.database.transaction() as session:
        settings = Settings(data_dir=tmp_path, invoice_empty_runs=True, invoice_prefix="ACM")
        invoice = issue_invoice(session, run_id=str(uuid.uuid4()), customer=session.get(Customer, "IDLE"),
                                period=OCTOBER, settings=settings, store=runtime.store)
        assert (invoice.number, invoice.charges, invoice.total) == ("ACM000001", [], Decimal(0))


def test_a_rolled_back_run_uses_no_number(runtime):
    add_call(runtime, "ACME", "1.000000")

    class Crash(Exception):
        pass

    with pytest.raises(Crash), runtime.database.transaction() as session:
        invoice = issue_invoice(session, run_id=str(uuid.uuid4()), customer=session.get(Customer, "ACME"),
                                period=OCTOBER, settings=runtime.settings, store=runtime.store)
        assert invoice.number == "INV-000001"
        raise Crash("killed after the number was taken, before the commit")
    with runtime.database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Invoice)) == 0
        assert session.scalar(select(Call.invoice_id)) is None  # the claim rolled back too
    close_run(runtime, "ACME")
    add_call(runtime, "ZERO", "1.000000")
    close_run(runtime, "ZERO")
    with runtime.database.transaction() as session:
        assert session.scalars(select(Invoice.number).order_by(Invoice.id)).all() == ["INV-000001", "INV-000002"]


def test_number_sequences_are_separate_and_gap_free(runtime):
    with runtime.database.transaction() as session:
        assert [next_number(session, INVOICE_SEQUENCE, "INV-") for _ in range(2)] == ["INV-000001", "INV-000002"]
        assert next_number(session, CREDIT_NOTE_SEQUENCE, "CN-") == "CN-000001"
        assert session.get(NumberSequence, INVOICE_SEQUENCE).next_value == 3


def test_closing_the_same_run_twice_issues_one_invoice(runtime):
    add_call(runtime, "ACME", "1.000000")
    run_id = str(uuid.uuid4())
    close_run(runtime, "ACME", run_id=run_id)
    add_call(runtime, "ACME", "2.000000")  # arrives late: for the next run, not a second invoice
    close_run(runtime, "ACME", run_id=run_id)
    with runtime.database.transaction() as session:
        [invoice] = session.scalars(select(Invoice)).all()
        assert invoice.total == Decimal("1.20")
    assert len(issued_events(runtime)) == 1


def test_the_invoice_issued_event_validates_and_carries_the_invoices_figures(runtime):
    add_call(runtime, "ACME", "1.004999")
    add_fee(runtime, "ACME", "12.6300", quantity=3, description="SIP trunk channels")
    close_run(runtime, "ACME")
    [event] = issued_events(runtime)
    validate_event(event)
    d = event["data"]
    with runtime.database.transaction() as session:
        invoice = invoice_of(session, "ACME")
        today = datetime.now(UTC).astimezone(runtime.settings.zone).date()
        assert (d["invoice_number"], d["customer"], d["currency"], d["period"]) == (invoice.number, "ACME", "GBP",
                                                                                   "2026-10")
        assert (d["issued_on"], d["due_on"]) == (invoice.issued_on.isoformat(), invoice.due_on.isoformat())
        assert invoice.issued_on == today and (invoice.due_on - invoice.issued_on).days == 14
        assert [Decimal(d[k]) for k in ("net", "tax", "total")] == [invoice.net, invoice.tax, invoice.total]
        # 1.00 + 12.63 = 13.63; 20% = 2.726 → 2.73
        assert (d["net"], d["tax"], d["total"]) == ("13.63", "2.73", "16.36")
        assert d["lines"] == [
            {"description": "Call Charges", "quantity": 1, "amount": "1.00", "tax_code": "standard", "kind": "calls"},
            {"description": "SIP trunk channels", "quantity": 3, "amount": "12.63", "tax_code": "standard",
             "kind": "fee"}]
        assert d["calls_csv"] == invoice.calls_csv


# --- what people read ----------------------------------------------------------------------


def test_the_calls_csv_shows_operator_zone_times_and_neutralises_formulas(runtime):
    add_call(runtime, "ACME", "0.040000", start=datetime(2026, 10, 24, 23, 30, tzinfo=UTC), cli=EVIL)  # BST
    add_call(runtime, "ACME", "0.123450", start=datetime(2026, 10, 25, 1, 30, tzinfo=UTC))  # GMT from 01:00 UTC
    close_run(runtime, "ACME")
    with runtime.database.transaction() as session:
        invoice = invoice_of(session, "ACME")
        text = runtime.store.read_bytes(invoice.calls_csv).decode()
        assert text == invoice_calls_csv(session, invoice, runtime.settings.zone).decode()
    assert text.splitlines() == [
        "Date,Time,CLI,Dialled number,Destination,Band,Duration (s),Billable seconds,Charge",
        '2026-10-25,00:30:00,"\'=HYPERLINK(""http://evil"",""x"")",442070000000,UK,peak,61,120,0.0400',
        "2026-10-25,01:30:00,441130000001,442070000000,UK,peak,61,120,0.12345"]


def test_the_pdf_rendered_after_the_run_shows_the_number_and_the_total(runtime):
    add_call(runtime, "ACME", "1234.000000")
    close_run(runtime, "ACME")
    with runtime.database.transaction() as session:
        invoice = invoice_of(session, "ACME")
        doc = invoice_document(session, invoice, runtime.settings)
        assert (doc.totals.net_minor, doc.totals.tax_minor, doc.totals.total_minor) == (123400, 24680, 148080)
        assert doc.seller.address == ("1 High St", "Leeds", "LS1 1AA") and doc.customer.address == ("2 Low Rd", "York")
        text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(invoice_pdf(session, invoice,
                                                                                            runtime.settings))).pages)
    assert "INV-000001" in text and "£1,480.80" in text and "Acme Telecom Ltd" in text


def test_a_credit_note_document_negates_the_credited_invoice(runtime):
    add_call(runtime, "ACME", "1.004999")
    close_run(runtime, "ACME")
    with runtime.database.transaction() as session:
        invoice = invoice_of(session, "ACME")
        note = CreditNote(number="CN-000001", invoice_id=invoice.id, issued_at=datetime(2026, 11, 30, 23, 30, tzinfo=UTC),
                          operator="ops", reason="wrong tariff", net=-invoice.net, tax=-invoice.tax,
                          total=-invoice.total)
        session.add(note)
        session.flush()
        doc = credit_note_document(session, note, runtime.settings)
        assert (doc.kind, doc.credited_number, doc.issue_date) == ("credit note", "INV-000001", date(2026, 11, 30))
        assert [(line.description, line.amount_minor) for line in doc.lines] == [("Call Charges", -100)]
        assert (doc.totals.net_minor, doc.totals.tax_minor, doc.totals.total_minor) == (-100, -20, -120)


def test_rendering_refuses_an_invoice_without_a_seller_name(runtime, tmp_path):
    add_call(runtime, "ACME", "1.000000")
    close_run(runtime, "ACME")
    with runtime.database.transaction() as session, pytest.raises(ConfigurationError, match="CDRFLOW_SELLER_NAME"):
        invoice_document(session, invoice_of(session, "ACME"), Settings(data_dir=tmp_path))


# --- runs issued in batches ----------------------------------------------------------------


def run_event(customer, period=OCTOBER, run_id=None):
    return Event(type=EventType.RUN_CLOSED, source="cdrflow/admin", subject=f"{customer}/{period.label}", data={
        "run_id": run_id or str(uuid.uuid4()), "customer": customer, "period": period.label,
        "period_start": period.start.isoformat(), "period_end": period.end.isoformat(), "trigger": "manual"})


def test_a_batch_of_runs_issues_what_each_run_alone_would_in_the_order_given(runtime):
    add_call(runtime, "ACME", "1.004")
    add_call(runtime, "ACME", "2.00", start=datetime(2026, 11, 3, tzinfo=UTC))  # November's
    add_call(runtime, "ZERO", "0.50")
    add_fee(runtime, "ZERO", "10.005")
    add_charge(runtime, "WEEK", "Line rental", "10.00", "monthly", date(2026, 10, 1))
    repeat = run_event("ZERO")
    week_44 = Period(date(2026, 10, 26), date(2026, 11, 2))
    batch = [run_event("ACME"), repeat, run_event("IDLE"), run_event("ACME", NOVEMBER), repeat,
             run_event("WEEK", week_44)]
    with runtime.database.transaction() as session:
        assert list(Invoicer(runtime).on_runs_closed(batch, session)) == []
    with runtime.database.transaction() as session:
        invoices = session.scalars(select(Invoice).order_by(Invoice.number)).all()
        # IDLE had nothing to bill: no invoice, no number; the repeated run issued once.
        assert [(i.number, i.customer, i.period_start) for i in invoices] == [
            ("INV-000001", "ACME", OCTOBER.start), ("INV-000002", "ZERO", OCTOBER.start),
            ("INV-000003", "ACME", NOVEMBER.start), ("INV-000004", "WEEK", week_44.start)]
        acme_oct, zero, acme_nov, week = invoices
        assert (acme_oct.net, acme_oct.tax, acme_oct.total) == (Decimal("1.00"), Decimal("0.20"), Decimal("1.20"))
        assert (acme_nov.net, acme_nov.total) == (Decimal("2.00"), Decimal("2.40"))
        assert lines_of(zero) == [("Call Charges", 1, Decimal("0.50"), "zero", "calls"),
                                  ("Line rental", 1, Decimal("10.01"), "zero", "fee")]
        assert zero.total == Decimal("10.51")
        assert lines_of(week) and {line[4] for line in lines_of(week)} == {"recurring"}
        assert {c.invoice_id for c in session.scalars(select(Call))} == {acme_oct.id, acme_nov.id, zero.id}
        csv_rows = invoice_calls_csv(session, acme_nov, runtime.settings.zone).decode().splitlines()
        assert len(csv_rows) == 2 and csv_rows[1].startswith("2026-11-03,00:00:00,")
    assert [e["data"]["invoice_number"] for e in issued_events(runtime)] == [
        "INV-000001", "INV-000002", "INV-000003", "INV-000004"]


def test_a_batch_naming_an_unknown_customer_issues_nothing(runtime):
    add_call(runtime, "ACME", "1.00")
    with runtime.database.transaction() as session, pytest.raises(Exception, match="unknown customer 'NOPE'"):
        list(Invoicer(runtime).on_runs_closed([run_event("ACME"), run_event("NOPE")], session))
    with runtime.database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Invoice)) == 0
