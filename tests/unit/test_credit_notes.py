"""Credit notes and reversed files, through the invoicer's admin-command handler over SQLite (no
broker): gap-free credit note numbers of their own, one credit note per invoice, credited calls
billed again by the next run, and a reversed file out of billing with its fingerprint freed."""

from datetime import UTC, date, datetime
from decimal import Decimal

import orjson
import pytest
from sqlalchemy import func, select

from cdrflow.db.models import (
    Call,
    CallUsageClaim,
    CreditNote,
    File,
    FileReversal,
    FingerprintClaim,
    Invoice,
    NumberSequence,
    OutboxEntry,
)
from cdrflow_app.demo import SAMPLES
from cdrflow.events import Event, EventType
from cdrflow.intake import FileMetadata, file_arrived
from services.dedupe.service import Dedupe
from services.invoicer import credit
from services.invoicer.credit import InvoicedFileError, billed_until_before, check_reversible, credit_invoice
from services.invoicer.service import Invoicer
from services.parser.service import Parser
from services.rater.service import Rater
from tests.schemas import validate_event
from tests.unit.test_handlers import handle, runtime, through_pipeline  # noqa: F401  (fixture)

OCTOBER = ("2026-10-01", "2026-11-01")
NOVEMBER = ("2026-11-01", "2026-12-01")
RUN_IDS = {OCTOBER: "6f1c1a52-9a53-4d55-9d7f-2c0f6f0f5a11", NOVEMBER: "7a2d2b63-0b64-4e66-8e80-3d1f7f1f6b22"}


def close_run(runtime, period=OCTOBER, customer="ACME"):
    start, end = period
    run = Event(type=EventType.RUN_CLOSED, source="cdrflow/admin", subject=f"{customer}/{start[:7]}", data={
        "run_id": RUN_IDS[period], "customer": customer, "period": start[:7], "period_start": start,
        "period_end": end, "trigger": "manual"})
    handle(runtime, Invoicer(runtime).on_run_closed, run)


def command(name, **data):
    return Event(type=EventType.ADMIN_COMMAND, source="cdrflow/admin", subject=data.get("file_id", "x"),
                 data={"command": name, "operator": "sam", "reason": "wrong rates", **data})


def invoice_of(session, start):
    return session.scalar(select(Invoice).where(Invoice.customer == "ACME",
                                                Invoice.period_start == date.fromisoformat(start)))


def outbox_events(runtime, type_):
    with runtime.database.transaction() as session:
        docs = [orjson.loads(e.payload) for e in session.scalars(select(OutboxEntry).order_by(OutboxEntry.id))]
    return [d for d in docs if d["type"] == type_]


def billed_october(runtime):
    through_pipeline(runtime, "gamma-cdr-20261001.csv", "gamma")
    through_pipeline(runtime, "btw-cdr-20261002.csv", "btw")
    close_run(runtime)


# --- credit notes ----------------------------------------------------------------------------------


def test_a_credit_note_voids_the_invoice_and_the_next_run_bills_its_calls_again(runtime):
    billed_october(runtime)
    with runtime.database.transaction() as session:
        october_calls = set(session.scalars(select(Call.id).where(Call.invoice_id.is_not(None))))
    assert len(october_calls) == 7
    handle(runtime, Invoicer(runtime).on_admin_command, command("credit", invoice_number="INV-000001"))
    with runtime.database.transaction() as session:
        october = invoice_of(session, "2026-10-01")
        [note] = session.scalars(select(CreditNote)).all()
        assert (october.status, note.number, note.invoice_id) == ("credited", "CN-000001", october.id)
        # the invoice's figures negated, as the credit note's PDF prints them: 0.32 net, 0.06 VAT
        assert (note.net, note.tax, note.total) == (Decimal("-0.32"), Decimal("-0.06"), Decimal("-0.38"))
        assert (note.operator, note.reason) == ("sam", "wrong rates")
        assert session.scalar(select(func.count()).select_from(Call).where(Call.invoice_id.is_not(None))) == 0
    [event] = outbox_events(runtime, EventType.CREDIT_NOTE_ISSUED)
    validate_event(event)
    assert {k: event["data"][k] for k in ("credit_note_number", "credited_invoice_number", "customer", "currency",
                                          "net", "tax", "total")} == {
        "credit_note_number": "CN-000001", "credited_invoice_number": "INV-000001", "customer": "ACME",
        "currency": "GBP", "net": "-0.32", "tax": "-0.06", "total": "-0.38"}

    close_run(runtime, OCTOBER)  # the credited period is not invoiced again
    close_run(runtime, NOVEMBER)  # the next run takes October's freed calls
    with runtime.database.transaction() as session:
        november = invoice_of(session, "2026-11-01")
        assert november.number == "INV-000002"
        [line] = november.charges
        assert line.quantity == 8  # October's 7 calls, freed, and the call of 1 November
        assert october_calls < set(session.scalars(select(Call.id).where(Call.invoice_id == november.id)))
        assert session.scalar(select(func.count()).select_from(Invoice)) == 2


def test_credit_note_numbers_are_their_own_gap_free_sequence(runtime):
    billed_october(runtime)
    with pytest.raises(RuntimeError), runtime.database.transaction() as session:
        credit_invoice(session, "INV-000001", operator="sam", reason="test", prefix="CN-", now=datetime.now(UTC))
        raise RuntimeError("rolled back after the number was taken")
    handle(runtime, Invoicer(runtime).on_admin_command, command("credit", invoice_number="INV-000001"))
    close_run(runtime, NOVEMBER)
    handle(runtime, Invoicer(runtime).on_admin_command, command("credit", invoice_number="INV-000002"))
    with runtime.database.transaction() as session:
        numbers = session.execute(select(CreditNote.number, Invoice.number).join(Invoice)
                                  .order_by(CreditNote.id)).all()
        assert [tuple(n) for n in numbers] == [("CN-000001", "INV-000001"), ("CN-000002", "INV-000002")]
        assert session.get(NumberSequence, "credit-note").next_value == 3
        assert session.get(NumberSequence, "invoice").next_value == 3  # credits take no invoice number


def test_crediting_an_invoice_twice_makes_one_credit_note_and_names_it(runtime):
    billed_october(runtime)
    first = command("credit", invoice_number="INV-000001")
    invoicer = Invoicer(runtime)
    handle(runtime, invoicer.on_admin_command, first)
    handle(runtime, invoicer.on_admin_command, first)  # the same command again, after a crash
    handle(runtime, invoicer.on_admin_command, command("credit", invoice_number="INV-000001"))  # a second one
    with runtime.database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(CreditNote)) == 1
        assert session.get(NumberSequence, "credit-note").next_value == 2
        with pytest.raises(credit.AlreadyCreditedError, match="credited already, by credit note CN-000001"):
            credit.check_creditable(session, "INV-000001")
    assert len(outbox_events(runtime, EventType.CREDIT_NOTE_ISSUED)) == 1


def test_a_credit_of_an_unknown_invoice_changes_nothing(runtime):
    assert handle(runtime, Invoicer(runtime).on_admin_command, command("credit", invoice_number="INV-424242")) == []
    with runtime.database.transaction() as session:
        assert session.get(NumberSequence, "credit-note").next_value == 1


def test_a_monthly_charge_goes_back_to_the_first_day_its_credited_invoice_billed():
    lines = [(date(2026, 11, 1), date(2026, 12, 1)), (date(2026, 10, 15), date(2026, 11, 1))]
    assert billed_until_before("monthly", None, lines) == date(2026, 10, 15)


def test_a_one_off_charge_on_a_credited_invoice_is_unbilled_again():
    assert billed_until_before("once", None, [(date(2026, 10, 3), date(2026, 10, 4))]) is None


def test_a_credit_past_a_charges_end_is_given_back_when_its_invoice_is_credited():
    """The run credited 15 Nov – 1 Dec of a charge ended on 15 Nov (billed_until went back to the
    end); crediting that invoice puts billed_until back at 1 Dec, so the next run credits it again."""
    assert billed_until_before("monthly", date(2026, 11, 15), [(date(2026, 11, 15), date(2026, 12, 1))]) \
        == date(2026, 12, 1)


# --- reversing a file ------------------------------------------------------------------------------


def arrive_bytes(runtime, data, name, carrier="gamma"):
    stored = runtime.store.put_bytes(data)
    return file_arrived(stored, FileMetadata(carrier, "cdr", "daily", "outbound", name, "upload"), "cdrflow/admin")


def through(runtime, event):
    [decision] = handle(runtime, Dedupe(runtime).on_file_arrived, event)
    if decision.type == EventType.FILE_ACCEPTED:
        for parsed in handle(runtime, Parser(runtime).on_file_accepted, decision):
            for rated in handle(runtime, Rater(runtime).on_record_parsed, parsed):
                handle(runtime, Invoicer(runtime).on_call_rated, rated)
    return decision


def test_a_file_reversed_before_invoicing_leaves_billing_and_a_resend_is_accepted_not_held(runtime):
    gamma = (SAMPLES / "gamma-cdr-20261001.csv").read_bytes()
    first = through(runtime, arrive_bytes(runtime, gamma, "gamma-cdr-20261001.csv"))
    handle(runtime, Invoicer(runtime).on_admin_command, command("reverse", file_id=first.subject))
    with runtime.database.transaction() as session:
        file = session.get(File, first.subject)
        assert (file.status, file.status_reason) == ("reversed", "reversed by sam: wrong rates")
        assert session.get(FileReversal, first.subject).reason == "wrong rates"
        assert set(session.scalars(select(Call.status).where(Call.file_id == first.subject))) == {"reversed"}
        assert session.scalar(select(func.count()).select_from(FingerprintClaim)) == 0
        assert session.scalar(select(func.count()).select_from(CallUsageClaim)) == 0

    resend = through(runtime, arrive_bytes(runtime, gamma, "gamma-cdr-20261001.csv"))
    assert resend.type == EventType.FILE_ACCEPTED  # not held as a duplicate of the reversed file
    close_run(runtime)
    with runtime.database.transaction() as session:
        resent = session.get(File, resend.subject)
        assert (resent.status, resent.overlapping_calls) == ("rated", 0)
        [line] = invoice_of(session, "2026-10-01").charges
        assert line.quantity == 4  # ACME's four gamma calls, billed once: the resend's
        assert set(session.scalars(select(Call.file_id).where(Call.invoice_id.is_not(None)))) == {resend.subject}


def test_calls_that_overlapped_a_reversed_file_are_billed_in_its_place(runtime):
    gamma = (SAMPLES / "gamma-cdr-20261001.csv").read_bytes()
    first = through(runtime, arrive_bytes(runtime, gamma, "gamma-cdr-20261001.csv"))
    corrected = through(runtime, arrive_bytes(runtime, gamma + b"+441632960001,01174960123,2026-10-03T09:00:00,60,0.001\n",
                                              "gamma-cdr-20261001-corrected.csv"))
    with runtime.database.transaction() as session:
        assert session.get(File, corrected.subject).overlapping_calls == 7  # all but its new call
    handle(runtime, Invoicer(runtime).on_admin_command, command("reverse", file_id=first.subject))
    close_run(runtime)
    with runtime.database.transaction() as session:
        assert session.get(File, corrected.subject).overlapping_calls == 0
        [line] = invoice_of(session, "2026-10-01").charges
        assert line.quantity == 5  # the four calls, now the corrected file's, and its new one
        assert set(session.scalars(select(Call.file_id).where(Call.invoice_id.is_not(None)))) == {corrected.subject}


def test_a_file_on_an_issued_invoice_is_not_reversed_until_the_invoice_is_credited(runtime):
    gamma = through_pipeline(runtime, "gamma-cdr-20261001.csv", "gamma")
    close_run(runtime)
    reverse = command("reverse", file_id=gamma.subject)
    handle(runtime, Invoicer(runtime).on_admin_command, reverse)
    with runtime.database.transaction() as session:
        assert session.get(File, gamma.subject).status == "rated"
        assert session.scalar(select(func.count()).select_from(FingerprintClaim)) == 1
        with pytest.raises(InvoicedFileError, match="credit invoice INV-000001 first"):
            check_reversible(session, gamma.subject)

    handle(runtime, Invoicer(runtime).on_admin_command, command("credit", invoice_number="INV-000001"))
    handle(runtime, Invoicer(runtime).on_admin_command, reverse)
    with runtime.database.transaction() as session:
        assert session.get(File, gamma.subject).status == "reversed"
    close_run(runtime, NOVEMBER)
    with runtime.database.transaction() as session:
        assert invoice_of(session, "2026-11-01") is None  # nothing left to bill: its calls left billing


def test_a_held_file_is_not_reversed_but_discarded(runtime):
    through_pipeline(runtime, "btw-cdr-20261002.csv", "btw")
    held = through_pipeline(runtime, "btw-cdr-20261002.csv", "btw")
    with runtime.database.transaction() as session:
        with pytest.raises(credit.ReverseRefusedError, match="held file is discarded, not reversed"):
            check_reversible(session, held.subject)
