"""A billing run's invoice: what it claims, the lines it makes, its number (database, no Kafka).

``issue_invoice`` runs inside the transaction of the handler that closes the run, so either
all of this happens or none of it does. The steps, in order:

1. **Calls.** Every outstanding rated call of the customer that started before the period's
   end (UTC instant of its local midnight): status ``rated``, not set aside, on no invoice;
   late calls of earlier periods included. Claimed and read back in one ``UPDATE … SET
   invoice_id … RETURNING``: a call stored meanwhile is either claimed and counted, or left
   for the next run; never claimed and not counted. They make one "Call Charges" line, the
   exact sum of their charges in micros rounded once, half up (``tax.call_charges_line``).
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

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from cdrflow.db.models import BillingTransaction, Call, Charge, Customer, CustomerCharge, File, Invoice, NumberSequence
from cdrflow.errors import ConfigurationError, InputError
from cdrflow.events import Event, EventType, event_id
from cdrflow.filestore import FileStore
from cdrflow.log import get_logger
from cdrflow.money import to_micros
from cdrflow.settings import Settings
from services.invoicer.periods import BillingSchedule, Period
from services.invoicer.recurring import OneOffCharge, RecurringCharge, charges_due
from services.invoicer.render import invoice_calls_csv
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
    value = session.execute(
        update(NumberSequence).where(NumberSequence.name == sequence)
        .values(next_value=NumberSequence.next_value + 1)
        .returning(NumberSequence.next_value - 1)
        .execution_options(synchronize_session=False)).scalar_one_or_none()
    if value is None:
        raise UnknownSequenceError(f"number sequence {sequence!r} does not exist: run `cdrflow db upgrade` "
                                   "(migration 0009 creates the invoice and credit-note sequences)")
    return f"{prefix}{value:0{NUMBER_DIGITS}d}"


def issue_invoice(session: Session, *, run_id: str, customer: Customer, period: Period, settings: Settings,
                  store: FileStore) -> Invoice | None:
    """The customer's invoice for ``period`` (steps in the module docstring), or None if nothing
    was due and ``settings.invoice_empty_runs`` is off. The caller commits."""
    zone = settings.zone
    money = currency(customer.currency)
    now = datetime.now(UTC)
    invoice = Invoice(run_id=run_id, customer=customer.code, period_start=period.start, period_end=period.end,
                      issued_at=now, total=Decimal(0), currency=money.code)
    session.add(invoice)
    session.flush()  # its id is what the calls and fees are claimed with
    set_committed_value(invoice, "charges", [])  # just inserted: no lines to load from the database

    lines: list[_Line] = []
    call_count, micros = _claim_calls(session, invoice, customer.code, period.utc_bounds(zone)[1])
    if call_count:
        lines.append(_Line(call_charges_line(call_count, micros, customer.tax_code, money), CALLS))
    lines += _claim_fees(session, invoice, customer, period, money)
    charges, billed = _charges_due(session, customer, period)
    lines += charges

    if not lines and not settings.invoice_empty_runs:
        session.delete(invoice)  # it claimed nothing; no number was taken
        session.flush()
        log.info("nothing_to_bill", run_id=run_id, customer=customer.code, period=period.label)
        return None

    # The CSV first: its read of the calls then flushes nothing, and the figures, lines and CSV
    # below reach the database in one flush (the one before the number is taken).
    calls_csv = store.put_bytes(invoice_calls_csv(session, invoice, zone)).fingerprint
    figures = totals((item.line for item in lines), UK_RATES)
    invoice.net, invoice.tax, invoice.total = (_pounds(v, money) for v in
                                               (figures.net_minor, figures.tax_minor, figures.total_minor))
    invoice.issued_on = now.astimezone(zone).date()
    invoice.due_on = invoice.issued_on + timedelta(days=customer.payment_terms_days)
    for item in lines:
        invoice.charges.append(Charge(
            description=item.line.description, quantity=item.line.quantity,
            amount=_pounds(item.line.amount_minor, money), tax_code=item.line.tax_code, kind=item.kind,
            covered_from=item.covered_from, covered_to=item.covered_to, customer_charge_id=item.customer_charge_id))
    for charge, billed_until in billed:
        charge.billed_until = billed_until
    invoice.calls_csv = calls_csv
    invoice.number = next_number(session, INVOICE_SEQUENCE, settings.invoice_prefix)  # last: see step 6
    session.flush()
    log.info("invoice_issued", invoice=invoice.number, run_id=run_id, customer=customer.code, period=period.label,
             calls=call_count, lines=len(lines), net=str(invoice.net), tax=str(invoice.tax), total=str(invoice.total))
    return invoice


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


def _claim_calls(session: Session, invoice: Invoice, customer: str, end_utc: datetime) -> tuple[int, int]:
    """Step 1: claim the outstanding calls; their count and the exact sum of their charges in micros.
    Only calls of files that are ``rated``: a file still being stored is billed once it is whole,
    and one that failed after some of its calls were stored (a part or a batch failed) never is."""
    charges = session.scalars(
        update(Call).where(Call.customer == customer, Call.status == "rated", Call.set_aside.is_(False),
                           Call.invoice_id.is_(None), Call.start < end_utc, Call.file_id.in_(_RATED_FILES))
        .values(invoice_id=invoice.id).returning(Call.charge)
        .execution_options(synchronize_session=False)).all()
    return len(charges), sum(to_micros(c) for c in charges if c is not None)


def _claim_fees(session: Session, invoice: Invoice, customer: Customer, period: Period,
                money: Currency) -> list[_Line]:
    """Step 2: claim the priced fixed fees due; a line each, in the order of their day."""
    t = BillingTransaction
    claimed = session.execute(
        update(t).where(t.customer == customer.code, t.status == "priced", t.invoice_id.is_(None),
                        or_(t.charge_on.is_(None), t.charge_on < period.end), t.file_id.in_(_RATED_FILES))
        .values(invoice_id=invoice.id)
        .returning(t.carrier_transaction_id, t.charge_on, t.description, t.quantity, t.price)
        .execution_options(synchronize_session=False)).all()
    lines = []
    for tid, _day, description, quantity, price in sorted(claimed, key=lambda r: (r.charge_on or date.min,
                                                                                    r.carrier_transaction_id)):
        if price is None:
            raise InputError(f"billing transaction {tid} of customer {customer.code} is priced but has no price: "
                             "price it again (its fee sheet) before billing")
        lines.append(_Line(InvoiceLine(description or FIXED_FEE, quantity, to_minor(price, money), customer.tax_code),
                           FEE))
    return lines


def _charges_due(session: Session, customer: Customer,
                 period: Period) -> tuple[list[_Line], list[tuple[CustomerCharge, date | None]]]:
    """Step 3: the lines due for each charge defined in cdrflow, and the ``billed_until`` to store."""
    rows = session.scalars(select(CustomerCharge).where(CustomerCharge.customer == customer.code)
                           .order_by(CustomerCharge.id)).all()
    if not rows:
        return [], []
    schedule = BillingSchedule.parse(customer.billing_schedule)
    lines: list[_Line] = []
    billed: list[tuple[CustomerCharge, date | None]] = []
    for row in rows:
        due = charges_due(charge_of(row), schedule, period, row.billed_until)
        if due.billed_until != row.billed_until:
            billed.append((row, due.billed_until))
        kind = ONE_OFF if row.frequency == ONCE else RECURRING
        lines += [_Line(InvoiceLine(line.description, line.quantity, line.amount_minor,
                                    row.tax_code or customer.tax_code),
                        kind, line.covered_from, line.covered_to, row.id) for line in due.lines]
    return lines, billed


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
