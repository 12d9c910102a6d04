"""Undoing billing without losing a call: credit notes and reversed files (library, no Kafka).

The invoicer's admin-command handler calls these in its transaction; the admin API calls the
``check_*`` functions first, so an operator hears a refusal at once (and the handler checks
again, because the state may change between the two).

**A credit note** voids an issued invoice in full. In the caller's one transaction, in order:

1. The invoice's row is switched ``issued`` → ``credited`` by one guarded UPDATE. It locks the
   row, so of two credit commands at once the second waits, then changes nothing and is refused
   with the first one's credit note; ``credit_notes.invoice_id`` is unique besides.
2. The credit note's number is taken from its own gap-free sequence (``credit-note``, prefix
   ``settings.credit_note_prefix``), inside this transaction: a rolled-back credit uses no number.
3. Its figures are the invoice's negated (an invoice of £25.50 is credited by -£25.50), as its
   PDF prints them (``render.credit_note_document`` negates each line) and credit-note-issued
   carries them.
4. What the invoice billed becomes unbilled again: its calls and billing transactions lose
   their ``invoice_id``; each customer charge it billed gets back the ``billed_until`` it had
   before that run (``billed_until_before``). The next billing run of the customer bills them
   (a run takes every outstanding call up to its period's end, late ones of earlier periods too).

The credited invoice keeps its (customer, period) key: a credited period is not closed again,
its calls go on the customer's next invoice (docs/billing.md, "Credit notes and reversing a file").

**A reversed file** leaves billing, while none of its calls or billing transactions is on an
issued invoice (after that, only a credit note undoes it). Its rows are kept, marked
``reversed`` (their (file, row) keys stay taken, so a late repeat of one of its batches stores
nothing); its usage claims go to the calls of other files that overlapped it, or go away, so a
corrected resend is not taken for an overlap; its fingerprint and file-name claims are
released, so a resend is not held as a duplicate; the file is ``reversed``, with who, when
and why in ``file_reversals``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from cdrflow.db.models import (
    BillingTransaction,
    Call,
    CallUsageClaim,
    Charge,
    CreditNote,
    CustomerCharge,
    File,
    FileNameClaim,
    FileReversal,
    FingerprintClaim,
    Invoice,
)
from cdrflow.db.upsert import insert_new
from cdrflow.errors import InputError
from cdrflow.events import Event, EventType, event_id
from cdrflow.money import ZERO
from services.invoicer.overlap import overlap_summary, usage_key

CREDIT, REVERSE = "credit", "reverse"
"""The admin commands this module carries out (handled by the invoicer)."""
CREDIT_NOTE_SEQUENCE = "credit-note"
ISSUED, CREDITED = "issued", "credited"
REVERSED = "reversed"
REVERSIBLE = ("rated",)
"""A file is reversed once processed: every call of it stored (held, in-flight and failed files are not)."""
ONCE = "once"


class CreditRefusedError(InputError):
    """An invoice can't be credited as things stand (the message says why and what to do)."""


class UnknownInvoiceError(CreditRefusedError):
    """No invoice has this number."""

    def __init__(self, number: str) -> None:
        self.number = number
        super().__init__(f"no invoice {number}: 'cdrflow invoices list' shows the invoices issued")


class AlreadyCreditedError(CreditRefusedError):
    """The invoice was credited before: an invoice is credited once, in full."""

    def __init__(self, invoice: str, credit_note: str) -> None:
        self.invoice, self.credit_note = invoice, credit_note
        super().__init__(f"invoice {invoice} is credited already, by credit note {credit_note}")


class ReverseRefusedError(InputError):
    """A file can't be reversed as things stand (the message says why and what to do)."""


class UnknownFileError(ReverseRefusedError):
    def __init__(self, file_id: str) -> None:
        self.file_id = file_id
        super().__init__(f"no file {file_id}")


class InvoicedFileError(ReverseRefusedError):
    """Some of the file's calls or fixed fees are on an issued invoice."""

    def __init__(self, file_id: str, invoices: Sequence[str]) -> None:
        self.file_id, self.invoices = file_id, tuple(invoices)
        first = " and ".join(self.invoices)
        super().__init__(f"file {file_id} is billed on invoice {first}: credit invoice {first} first "
                         f"('cdrflow invoices credit {self.invoices[0]} --reason …'), then reverse the file")


# --- credit notes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credited:
    """What one credit did: the credit note and what became unbilled."""

    note: CreditNote
    invoice: Invoice
    calls: int
    transactions: int
    customer_charges: int


def find_invoice(session: Session, number: str) -> Invoice:
    invoice = session.scalar(select(Invoice).where(Invoice.number == number))
    if invoice is None:
        raise UnknownInvoiceError(number)
    return invoice


def credit_note_of(session: Session, invoice: Invoice) -> CreditNote | None:
    return session.scalar(select(CreditNote).where(CreditNote.invoice_id == invoice.id))


def check_creditable(session: Session, number: str) -> Invoice:
    """The invoice, if it can be credited; raises CreditRefusedError with the reason otherwise."""
    invoice = find_invoice(session, number)
    note = credit_note_of(session, invoice)
    if note is not None or invoice.status == CREDITED:
        raise AlreadyCreditedError(number, note.number if note else "(unknown)")
    later = _later_invoice_of_its_charges(session, invoice)
    if later:
        raise CreditRefusedError(f"invoice {number} bills recurring charges that the later invoice {later} bills "
                                 f"on from there: credit invoice {later} first, so no day is billed twice")
    return invoice


def credit_invoice(session: Session, number: str, *, operator: str, reason: str, prefix: str,
                   now: datetime) -> Credited:
    """Void the invoice ``number`` in full (the steps are in the module docstring, in order)."""
    from services.invoicer.billing import next_number

    if not reason.strip():
        raise CreditRefusedError(f"crediting invoice {number} needs a reason (recorded with who and when)")
    invoice = check_creditable(session, number)
    switched = session.execute(update(Invoice).where(Invoice.id == invoice.id, Invoice.status == ISSUED)
                               .values(status=CREDITED)).rowcount
    if switched != 1:  # credited meanwhile, by a command that committed while this one waited
        session.refresh(invoice)
        note = credit_note_of(session, invoice)
        raise AlreadyCreditedError(number, note.number if note else "(unknown)")
    net = invoice.net if invoice.net is not None else invoice.total
    tax = invoice.tax if invoice.tax is not None else ZERO
    note = CreditNote(number=next_number(session, CREDIT_NOTE_SEQUENCE, prefix), invoice_id=invoice.id,
                      issued_at=now, operator=operator, reason=reason.strip(), net=-net, tax=-tax,
                      total=-(net + tax))
    session.add(note)
    calls = session.execute(update(Call).where(Call.invoice_id == invoice.id).values(invoice_id=None)).rowcount
    transactions = session.execute(update(BillingTransaction).where(BillingTransaction.invoice_id == invoice.id)
                                   .values(invoice_id=None, updated_at=now)).rowcount
    charges = _unbill_customer_charges(session, invoice)
    session.flush()
    session.refresh(invoice)
    return Credited(note, invoice, calls, transactions, charges)


def billed_until_before(frequency: str, end: date | None, lines: Sequence[tuple[date | None, date | None]]
                        ) -> date | None:
    """A customer charge's ``billed_until`` before the run that billed ``lines`` (each
    (covered_from, covered_to), ends exclusive) of it: a one-off charge was not billed (None);
    a run that credited days past the charge's end (lines from ``end`` on) had it at their last
    day; any other run had it at the earliest day it billed."""
    if frequency == ONCE:
        return None
    froms = [f for f, _ in lines if f is not None]
    credits_past_end = [t for f, t in lines if end is not None and f is not None and f >= end and t is not None]
    if credits_past_end:
        return max(credits_past_end)
    return min(froms) if froms else None


def _charge_lines(session: Session, invoice: Invoice) -> dict[int, list[tuple[date | None, date | None]]]:
    by_charge: dict[int, list[tuple[date | None, date | None]]] = {}
    for charge_id, covered_from, covered_to in session.execute(
            select(Charge.customer_charge_id, Charge.covered_from, Charge.covered_to)
            .where(Charge.invoice_id == invoice.id, Charge.customer_charge_id.is_not(None))):
        by_charge.setdefault(charge_id, []).append((covered_from, covered_to))
    return by_charge


def _unbill_customer_charges(session: Session, invoice: Invoice) -> int:
    by_charge = _charge_lines(session, invoice)
    for charge in session.scalars(select(CustomerCharge).where(CustomerCharge.id.in_(by_charge))):
        charge.billed_until = billed_until_before(charge.frequency, charge.end, by_charge[charge.id])
    return len(by_charge)


def _later_invoice_of_its_charges(session: Session, invoice: Invoice) -> str | None:
    """An issued invoice after this one billing one of its customer charges: crediting this one
    first would move ``billed_until`` back under that invoice's days, and bill them twice."""
    ids = list(_charge_lines(session, invoice))
    if not ids:
        return None
    return session.scalar(
        select(Invoice.number).join(Charge, Charge.invoice_id == Invoice.id)
        .where(Charge.customer_charge_id.in_(ids), Invoice.id > invoice.id, Invoice.status == ISSUED)
        .order_by(Invoice.id.desc()).limit(1))


def money_text(amount: object) -> str:
    """An invoice figure as events carry it: two places, exact ("-25.50")."""
    return f"{amount:.2f}"


def credit_note_event(credited: Credited, source: str) -> Event:
    """credit-note-issued: one per invoice (its id derives from the invoice number)."""
    note, invoice = credited.note, credited.invoice
    return Event(
        type=EventType.CREDIT_NOTE_ISSUED, source=source, subject=note.number,
        id=event_id(EventType.CREDIT_NOTE_ISSUED, invoice.number),
        data={"credit_note_number": note.number, "credited_invoice_number": invoice.number,
              "customer": invoice.customer, "currency": invoice.currency,
              "period_start": invoice.period_start.isoformat(), "period_end": invoice.period_end.isoformat(),
              "issued_at": note.issued_at.isoformat(), "net": money_text(note.net), "tax": money_text(note.tax),
              "total": money_text(note.total), "operator": note.operator, "reason": note.reason})


# --- reversing a file --------------------------------------------------------------------------


@dataclass(frozen=True)
class Reversed:
    file_id: str
    calls: int
    transactions: int
    claims_handed_over: int


def _invoices_billing(session: Session, file_id: str) -> list[str]:
    """Numbers of the issued invoices that bill a call or fixed fee of the file."""
    call_invoices = select(Call.invoice_id).where(Call.file_id == file_id, Call.invoice_id.is_not(None))
    fee_invoices = select(BillingTransaction.invoice_id).where(BillingTransaction.file_id == file_id,
                                                               BillingTransaction.invoice_id.is_not(None))
    return list(session.scalars(select(Invoice.number).where(
        Invoice.id.in_(call_invoices.union(fee_invoices).scalar_subquery()), Invoice.status == ISSUED)
        .order_by(Invoice.id)))


def check_reversible(session: Session, file_id: str) -> File | None:
    """The file, if it can be reversed; None if it is reversed already (a repeat changes nothing);
    raises ReverseRefusedError with the reason otherwise."""
    file = session.get(File, file_id)
    if file is None:
        raise UnknownFileError(file_id)
    if file.status == REVERSED:
        return None
    if file.status not in REVERSIBLE:
        hint = {"held": "a held file is discarded, not reversed ('cdrflow files discard')",
                "discarded": "a discarded file was never billed"}.get(
            file.status, "only a processed (rated) file is reversed: wait until it is, or retry it if it failed")
        raise ReverseRefusedError(f"file {file_id} is {file.status}: {hint}")
    invoices = _invoices_billing(session, file_id)
    if invoices:
        raise InvoicedFileError(file_id, invoices)
    return file


def reverse_file(session: Session, file_id: str, *, operator: str, reason: str, command_id: str,
                 now: datetime) -> Reversed | None:
    """Take the file out of billing (module docstring). None when it was reversed already.

    The order matters. 1: check (state, no issued invoice). 2: in a savepoint, mark its
    not-invoiced calls and fees reversed. 3: check again: a billing run that claimed some of
    its calls while step 2 waited for their row locks (PostgreSQL, READ COMMITTED) shows here,
    and the savepoint undoes step 2. 4: claims, the file's status and the record."""
    if not reason.strip():
        raise ReverseRefusedError(f"reversing file {file_id} needs a reason (recorded with who and when)")
    file = check_reversible(session, file_id)
    if file is None:
        return None
    note = f"file reversed by {operator}: {reason.strip()}"
    savepoint = session.begin_nested()
    calls = session.execute(update(Call).where(Call.file_id == file_id, Call.invoice_id.is_(None))
                            .values(status=REVERSED, reason=note, set_aside=False)).rowcount
    fees = session.execute(update(BillingTransaction).where(BillingTransaction.file_id == file_id,
                                                            BillingTransaction.invoice_id.is_(None))
                           .values(status=REVERSED, reason=note, updated_at=now)).rowcount
    invoices = _invoices_billing(session, file_id)
    if invoices:
        savepoint.rollback()
        raise InvoicedFileError(file_id, invoices)
    savepoint.commit()
    session.execute(delete(CallUsageClaim).where(CallUsageClaim.file_id == file_id))
    handed_over = _hand_over_usage(session, file_id)
    session.execute(delete(FingerprintClaim).where(FingerprintClaim.file_id == file_id))
    session.execute(delete(FileNameClaim).where(FileNameClaim.file_id == file_id))
    file.status, file.status_reason, file.updated_at = REVERSED, f"reversed by {operator}: {reason.strip()}", now
    session.add(FileReversal(file_id=file_id, operator=operator, reason=reason.strip(), command_id=command_id,
                             reversed_at=now))
    return Reversed(file_id, calls, fees, handed_over)


def _hand_over_usage(session: Session, file_id: str) -> int:
    """Calls of other files that overlapped the reversed file's calls (not billed, not reversed)
    take over the usage claims, first come (received, then row) first: the first of each usage
    becomes a call of its own (billed by its next run), a later one overlaps that one's file.
    Returns how many claims were handed over."""
    rows = session.execute(
        select(Call.id, Call.file_id, Call.row, Call.carrier, Call.cli, Call.dialled, Call.start, Call.duration)
        .join(File, File.id == Call.file_id)
        .where(Call.overlaps_file_id == file_id, Call.invoice_id.is_(None), Call.status != REVERSED)
        .order_by(File.received_at, Call.file_id, Call.row)).all()
    handed_over, touched = 0, set()
    for call_id, other, row, carrier, cli, dialled, start, duration in rows:
        usage_start, usage_hash = usage_key(carrier, cli, dialled, start, duration)
        touched.add(other)
        if insert_new(session, CallUsageClaim.__table__, [{"usage_start": usage_start, "usage_hash": usage_hash,
                                                           "file_id": other, "row": row}],
                      key=["usage_start", "usage_hash"]) == 1:
            session.execute(update(Call).where(Call.id == call_id).values(overlaps_file_id=None, set_aside=False))
            handed_over += 1
        else:
            holder = session.get(CallUsageClaim, (usage_start, usage_hash))
            session.execute(update(Call).where(Call.id == call_id).values(overlaps_file_id=holder.file_id))
    for other in touched:
        _recount_overlaps(session, other)
    return handed_over


def _recount_overlaps(session: Session, file_id: str) -> None:
    """A file's overlap mark after its overlaps changed (as the invoicer marks it when rated)."""
    counts = dict(session.execute(
        select(Call.overlaps_file_id, func.count()).where(Call.file_id == file_id, Call.overlaps_file_id.is_not(None))
        .group_by(Call.overlaps_file_id)).all())
    names = dict(session.execute(select(File.id, File.original_name).where(File.id.in_(counts))).all())
    file = session.get(File, file_id)
    if file is not None:
        file.overlapping_calls = sum(counts.values())
        file.overlaps = overlap_summary(counts, names) if counts else None
