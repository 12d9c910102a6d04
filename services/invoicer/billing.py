"""A billing run's invoice: what it claims, the lines it makes, its number (database, no Kafka).

``issue_invoice`` (``issue_invoices`` for a batch of runs, each step one statement for all of
them) runs inside the transaction of the handler that closes the run, so either all of this
happens or none of it does. The steps, in order:

1. **Calls.** Every outstanding rated call of the customer that started before the period's
   end (UTC instant of its local midnight): status ``rated``, not set aside, on no invoice;
   late calls of earlier periods included. Claimed with one ``UPDATE … SET invoice_id …
   FROM invoices``, then counted by invoice in the same transaction: a call stored meanwhile
   is either claimed and counted, or left for the next run; never claimed and not counted.
   They make one "Call Charges" line, the exact sum of their charges in micros rounded
   once, half up (``tax.call_charges_line``).
2. **Fixed fees.** The customer's priced billing transactions on no invoice whose day
   (``charge_on``) is before the period's end (or that have no day), claimed the same way:
   a line each, its price rounded once, half up, to the minor unit.
3. **Charges defined in cdrflow.** Each of the customer's recurring and one-off charges,
   through ``recurring.charges_due``: its lines, and ``billed_until`` moved on in this same
   transaction, so a day is billed once.
4. **Nothing to bill**: no invoice (and no number used) unless ``invoice_empty_runs``.
5. **Figures** by ``tax.totals`` (VAT per rate on the net, rounded once), in the customer's
   currency; the calls CSV written to the file store (the PDF is rendered later, by whoever
   needs it: ``services.invoicer.render``).
6. **The number**, last: ``next_number`` takes the next value of a gap-free sequence with an
   ``UPDATE … RETURNING`` in this transaction. A run that rolls back gives its number back
   with everything else, and two invoicers issuing at once queue on the sequence's row, so
   numbers have no gaps and no repeats (a database SEQUENCE would leave gaps). Taken last,
   the row is held locked for as short a time as the transaction allows.

An invoice is unique per (customer, period): the caller looks for one first, and the
unique key refuses a second made by a race.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import BigInteger, func, insert, or_, select, type_coerce, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from cdrflow.db.models import BillingTransaction, Call, Charge, Customer, CustomerCharge, File, Invoice, NumberSequence
from cdrflow.errors import ConfigurationError, InputError
from cdrflow.events import Event, EventType, event_id
from cdrflow.filestore import FileStore
from cdrflow.log import get_logger
from cdrflow.settings import Settings
from services.invoicer.periods import BillingSchedule, Period
from services.invoicer.recurring import OneOffCharge, RecurringCharge, charges_due
from services.invoicer.render import invoice_calls_csvs
from services.invoicer.tax import UK_RATES, Currency, InvoiceLine, call_charges_line, currency, totals

log = get_logger(__name__)

INVOICE_SEQUENCE = "invoice"
CREDIT_NOTE_SEQUENCE = "credit-note"
NUMBER_DIGITS = 6
ONCE = "once"  # CustomerCharge.frequency of a one-off charge

# Charge.kind of each line
CALLS, FEE, RECURRING, ONE_OFF = "calls", "fee", "recurring", "one-off"
FIXED_FEE = "Fixed fee"  # a priced fee's line when the carrier gave no description


class UnknownSequenceError(ConfigurationError):
    """A document number sequence is missing from ``number_sequences`` (migration 0009 adds them)."""


@dataclass(frozen=True)
class _Line:
    """An invoice line with what the ``charges`` row keeps beside it."""

    line: InvoiceLine
    kind: str
    covered_from: date | None = None
    covered_to: date | None = None
    customer_charge_id: int | None = None


def next_number(session: Session, sequence: str, prefix: str) -> str:
    """The next number of a gap-free sequence, taken in ``session``'s transaction: "INV-000042".

    Returned to the sequence if the transaction rolls back; concurrent callers wait on the row."""
    return next_numbers(session, sequence, prefix, 1)[0]


def next_numbers(session: Session, sequence: str, prefix: str, count: int) -> list[str]:
    """The next ``count`` numbers of a gap-free sequence, in order, taken with one ``UPDATE …
    RETURNING`` in ``session``'s transaction (``next_number``'s rules)."""
    first = session.execute(
        update(NumberSequence).where(NumberSequence.name == sequence)
        .values(next_value=NumberSequence.next_value + count)
        .returning(NumberSequence.next_value - count)
        .execution_options(synchronize_session=False)).scalar_one_or_none()
    if first is None:
        raise UnknownSequenceError(f"number sequence {sequence!r} does not exist: run `cdrflow db upgrade` "
                                   "(migration 0009 creates the invoice and credit-note sequences)")
    return [f"{prefix}{value:0{NUMBER_DIGITS}d}" for value in range(first, first + count)]


@dataclass(frozen=True)
class Run:
    """A billing run to issue: its id, its customer (the row) and its period."""

    run_id: str
    customer: Customer
    period: Period


def issue_invoice(session: Session, *, run_id: str, customer: Customer, period: Period, settings: Settings,
                  store: FileStore) -> Invoice | None:
    """The customer's invoice for ``period`` (steps in the module docstring), or None if nothing
    was due and ``settings.invoice_empty_runs`` is off. The caller commits."""
    return issue_invoices(session, [Run(run_id, customer, period)], settings=settings, store=store)[0]


def issue_invoices(session: Session, runs: Sequence[Run], *, settings: Settings,
                   store: FileStore) -> list[Invoice | None]:
    """``issue_invoice`` for each run, in order, in one transaction, with a few statements for
    all of them (a run of 10,000 customers is 50 of these, not 10,000 transactions): each step
    of the module docstring is one statement for every invoice of a group, and the numbers
    one ``UPDATE`` for the group, taken last, in the order of ``runs``. A group holds each
    customer once, so a customer's two periods are issued one after the other, in the order
    given. The caller commits; a caller that must not issue a run twice looks first."""
    issued: list[Invoice | None] = []
    for group in _groups(runs):
        issued += _issue_group(session, group, settings, store)
    return issued


def _groups(runs: Sequence[Run]) -> list[list[Run]]:
    """Consecutive runs, a new group wherever a customer would be in one twice."""
    groups: list[list[Run]] = []
    seen: set[str] = set()
    for run in runs:
        if not groups or run.customer.code in seen:
            groups.append([])
            seen = set()
        groups[-1].append(run)
        seen.add(run.customer.code)
    return groups


def _issue_group(session: Session, runs: list[Run], settings: Settings, store: FileStore) -> list[Invoice | None]:
    zone = settings.zone
    now = datetime.now(UTC)
    invoices = [Invoice(run_id=r.run_id, customer=r.customer.code, period_start=r.period.start,
                        period_end=r.period.end, issued_at=now, total=Decimal(0),
                        currency=currency(r.customer.currency).code) for r in runs]
    session.add_all(invoices)
    session.flush()  # their ids are what the calls and fees are claimed with
    for invoice in invoices:
        set_committed_value(invoice, "charges", [])  # just inserted: no lines to load from the database

    calls = _claim_calls(session, {i.id: r.period.utc_bounds(zone)[1] for r, i in zip(runs, invoices, strict=True)})
    fees = _claim_fees(session, [i.id for i in invoices])
    due = _charges_due(session, runs)
    billable: list[tuple[Run, Invoice, list[_Line], int]] = []
    issued: list[Invoice | None] = []
    for run, invoice in zip(runs, invoices, strict=True):
        money = currency(run.customer.currency)
        lines: list[_Line] = []
        call_count, micros = calls.get(invoice.id, (0, 0))
        if call_count:
            lines.append(_Line(call_charges_line(call_count, micros, run.customer.tax_code, money), CALLS))
        lines += [_fee_line(fee, run.customer, money) for fee in fees.get(invoice.id, [])]
        lines += due.get(run.customer.code, [])
        if not lines and not settings.invoice_empty_runs:
            session.delete(invoice)  # it claimed nothing; no number is taken
            log.info("nothing_to_bill", run_id=run.run_id, customer=run.customer.code, period=run.period.label)
            issued.append(None)
            continue
        billable.append((run, invoice, lines, call_count))
        issued.append(invoice)

    # The CSVs first: their read of the calls then flushes only the deletes above; the lines
    # below go in one INSERT, the figures and CSVs in one flush, with the numbers taken last.
    session.flush()
    csvs = invoice_calls_csvs(session, [invoice.id for _, invoice, _, _ in billable], zone)
    rows: list[dict[str, Any]] = []
    for run, invoice, lines, call_count in billable:
        money = currency(run.customer.currency)
        figures = totals((item.line for item in lines), UK_RATES)
        invoice.net, invoice.tax, invoice.total = (_pounds(v, money) for v in
                                                   (figures.net_minor, figures.tax_minor, figures.total_minor))
        invoice.issued_on = now.astimezone(zone).date()
        invoice.due_on = invoice.issued_on + timedelta(days=run.customer.payment_terms_days)
        charges = [dict(invoice_id=invoice.id, description=item.line.description, quantity=item.line.quantity,
                        amount=_pounds(item.line.amount_minor, money), tax_code=item.line.tax_code, kind=item.kind,
                        covered_from=item.covered_from, covered_to=item.covered_to,
                        customer_charge_id=item.customer_charge_id) for item in lines]
        rows += charges
        # The lines as this transaction's invoice-issued event reads them (no ids: none is read
        # before the commit), stored by one bulk INSERT for the group below rather than through
        # the session's unit of work one object at a time.
        set_committed_value(invoice, "charges", [Charge(**charge) for charge in charges])
    if rows:
        session.execute(insert(Charge), rows)
    stored = store.put_many([csvs[invoice.id] for _, invoice, _, _ in billable])
    for (_, invoice, _, _), csv in zip(billable, stored, strict=True):
        invoice.calls_csv = csv.fingerprint
    if billable:  # last: see step 6
        numbers = next_numbers(session, INVOICE_SEQUENCE, settings.invoice_prefix, len(billable))
        for (run, invoice, lines, call_count), number in zip(billable, numbers, strict=True):
            invoice.number = number
            log.info("invoice_issued", invoice=number, run_id=run.run_id, customer=run.customer.code,
                     period=run.period.label, calls=call_count, lines=len(lines), net=str(invoice.net),
                     tax=str(invoice.tax), total=str(invoice.total))
    session.flush()
    return issued


def invoice_issued(invoice: Invoice, *, run_id: str, source: str) -> Event:
    """The invoice-issued event of an invoice just issued: its figures as decimal strings."""
    money = currency(invoice.currency)
    period = Period(invoice.period_start, invoice.period_end)
    assert invoice.number is not None and invoice.issued_on is not None and invoice.due_on is not None
    return Event(
        type=EventType.INVOICE_ISSUED, source=source, subject=invoice.number,
        id=event_id(EventType.INVOICE_ISSUED, invoice.customer, period.start, period.end),
        data={
            "invoice_number": invoice.number, "run_id": run_id, "customer": invoice.customer,
            "currency": money.code, "period": period.label, "period_start": period.start.isoformat(),
            "period_end": period.end.isoformat(), "issued_at": invoice.issued_at.isoformat(),
            "issued_on": invoice.issued_on.isoformat(), "due_on": invoice.due_on.isoformat(),
            "lines": [{"description": c.description, "quantity": c.quantity, "amount": _text(c.amount, money),
                       "tax_code": c.tax_code, "kind": c.kind} for c in invoice.charges],
            "net": _text(invoice.net, money), "tax": _text(invoice.tax, money), "total": _text(invoice.total, money),
            "calls_csv": invoice.calls_csv,
        },
    )


# --- the steps -----------------------------------------------------------------------------

_RATED_FILES = select(File.id).where(File.status == "rated")
"""Files whose calls and fees may be billed: every row of them stored."""


def _claim_calls(session: Session, ends: dict[int, datetime]) -> dict[int, tuple[int, int]]:
    """Step 1 for each invoice (its id → the UTC instant its period ends): claim its customer's
    outstanding calls; per invoice, their count and the exact sum of their charges in micros.
    One ``UPDATE … FROM invoices`` per period end, then one count and sum by invoice: only
    this transaction can have set those invoice ids. Only calls of files that are ``rated``: a
    file still being stored is billed once it is whole, and one that failed after some of its
    calls were stored (a part or a batch failed) never is."""
    by_end: dict[datetime, list[int]] = {}
    for invoice_id, end_utc in ends.items():
        by_end.setdefault(end_utc, []).append(invoice_id)
    for end_utc, ids in by_end.items():
        session.execute(
            update(Call).where(Call.customer == Invoice.customer, Invoice.id.in_(ids), Call.status == "rated",
                               Call.set_aside.is_(False), Call.invoice_id.is_(None), Call.start < end_utc,
                               Call.file_id.in_(_RATED_FILES))
            .values(invoice_id=Invoice.id).execution_options(synchronize_session=False))
    micros = type_coerce(Call.charge, BigInteger)  # the stored integer micros, summed exactly
    rows = session.execute(select(Call.invoice_id, func.count(), func.coalesce(func.sum(micros), 0))
                           .where(Call.invoice_id.in_(list(ends))).group_by(Call.invoice_id))
    return {invoice_id: (count, int(total)) for invoice_id, count, total in rows}


@dataclass(frozen=True)
class _Fee:
    carrier_transaction_id: int
    charge_on: date | None
    description: str | None
    quantity: int
    price: Decimal | None


def _claim_fees(session: Session, invoice_ids: list[int]) -> dict[int, list[_Fee]]:
    """Step 2 for each invoice: claim its customer's priced fixed fees on no invoice whose day
    is before its period's end (or that have no day); per invoice, in the order of their day."""
    t = BillingTransaction
    claimed = session.execute(
        update(t).where(t.customer == Invoice.customer, Invoice.id.in_(invoice_ids), t.status == "priced",
                        t.invoice_id.is_(None), or_(t.charge_on.is_(None), t.charge_on < Invoice.period_end),
                        t.file_id.in_(_RATED_FILES))
        .values(invoice_id=Invoice.id)
        .returning(t.invoice_id, t.carrier_transaction_id, t.charge_on, t.description, t.quantity, t.price)
        .execution_options(synchronize_session=False)).all()
    fees: dict[int, list[_Fee]] = {}
    for invoice_id, *fee in sorted(claimed, key=lambda r: (r.charge_on or date.min, r.carrier_transaction_id)):
        fees.setdefault(invoice_id, []).append(_Fee(*fee))
    return fees


def _fee_line(fee: _Fee, customer: Customer, money: Currency) -> _Line:
    """A claimed fee's line: its price rounded once, half up, to the minor unit."""
    if fee.price is None:
        raise InputError(f"billing transaction {fee.carrier_transaction_id} of customer {customer.code} is priced "
                         "but has no price: price it again (its fee sheet) before billing")
    return _Line(InvoiceLine(fee.description or FIXED_FEE, fee.quantity, to_minor(fee.price, money),
                             customer.tax_code), FEE)


def _charges_due(session: Session, runs: list[Run]) -> dict[str, list[_Line]]:
    """Step 3 for each run's customer (once each in a group): the lines due for each of its
    charges defined in cdrflow, with ``billed_until`` moved on (flushed with the invoices)."""
    of_customer = {run.customer.code: run for run in runs}
    rows = session.scalars(select(CustomerCharge).where(CustomerCharge.customer.in_(list(of_customer)))
                           .order_by(CustomerCharge.id)).all()
    lines: dict[str, list[_Line]] = {}
    for row in rows:
        run = of_customer[row.customer]
        due = charges_due(charge_of(row), BillingSchedule.parse(run.customer.billing_schedule), run.period,
                          row.billed_until)
        if due.billed_until != row.billed_until:
            row.billed_until = due.billed_until
        kind = ONE_OFF if row.frequency == ONCE else RECURRING
        tax_code = row.tax_code or run.customer.tax_code
        lines.setdefault(row.customer, []).extend(
            _Line(InvoiceLine(line.description, line.quantity, line.amount_minor, tax_code),
                  kind, line.covered_from, line.covered_to, row.id) for line in due.lines)
    return lines


def charge_of(row: CustomerCharge) -> RecurringCharge | OneOffCharge:
    """A stored customer charge as ``recurring.charges_due`` takes it."""
    if row.frequency == ONCE:
        return OneOffCharge(row.description, row.amount, row.start, row.quantity)
    return RecurringCharge(row.description, row.amount, row.frequency, row.start, row.end, row.quantity)


# --- money ---------------------------------------------------------------------------------


def to_minor(amount: Decimal, money: Currency) -> int:
    """An exact amount in minor units, rounded once, half up (away from zero)."""
    return int(amount.scaleb(money.exponent).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _pounds(minor: int, money: Currency) -> Decimal:
    """Minor units as an exact amount of the currency with its places: 113 → Decimal("1.13")."""
    return Decimal(minor).scaleb(-money.exponent)


def _text(amount: Any, money: Currency) -> str:
    """An amount as the bus carries it: a decimal string with the currency's places ("-12.00")."""
    return f"{Decimal(amount).quantize(Decimal(1).scaleb(-money.exponent)):f}"
