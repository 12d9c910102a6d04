"""What is not billed yet: a customer's calls and charges as the next billing run sees them
(queries over a session; nothing here writes).

*Unbilled* means what a billing run takes (``services.invoicer.billing``, steps 1–3) and has
not taken yet:

- a **call**: status ``rated``, not set aside, on no invoice (a credited invoice's calls are
  on no invoice again). A call of a file that is not ``rated`` yet (still being stored, or
  failed part-way) is unbilled but a run does not bill it: a run takes whole files only. Such
  calls are in the totals and counted apart (``in_unrated_files``), so the operator sees both
  what is outstanding and why a run may bill less.
- a **fixed fee**: a billing transaction ``priced`` and on no invoice.
- a **charge defined in cdrflow**: a recurring charge's lines that the customer's next billing
  run would bill (``recurring.charges_due`` for that period), and each one-off charge not billed.

Days are local dates in the operator's zone and ``last`` is inclusive (the last day shown, as
people write a date range): a range is the UTC instants from the local midnight starting
``first`` to the local midnight after ``last``. A day across a clock change is 23 or 25 hours.

Money: calls are summed in integer micros (exact), then rounded once, half up, to the
customer's currency, as the invoice's "Call Charges" line is; charge and fee lines are in minor
units (pennies), each rounded once as the invoice rounds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import BigInteger, Select, case, func, select, type_coerce
from sqlalchemy.orm import Session

from cdrflow.db.models import BillingTransaction, Call, Customer, CustomerCharge, File, Invoice
from cdrflow.errors import InputError
from services.invoicer.periods import Period
from services.invoicer.billing import charge_of, to_minor
from services.invoicer.recurring import charges_due
from services.invoicer.tax import Currency, call_charges_minor, currency
from services.scheduler.runs import (
    UnknownCustomerError,
    billing_since,
    closed_periods,
    latest_ended_period,
    schedule_of,
)

ONCE = "once"  # CustomerCharge.frequency of a one-off charge
RECURRING, ONE_OFF, FEE = "recurring", "one-off", "fee"  # Charge.kind of the line each becomes
FIXED_FEE = "Fixed fee"  # a fee's description when the carrier gave none (as on the invoice)


class BadDateError(InputError):
    """A day given to filter calls by is not a date, or the range ends before it starts."""


@dataclass(frozen=True)
class DayRange:
    """Local days ``first`` to ``last``, both included; either end may be open (None)."""

    first: date | None = None
    last: date | None = None  # inclusive

    def __post_init__(self) -> None:
        if self.first is not None and self.last is not None and self.last < self.first:
            raise BadDateError(f"'to' {self.last} is before 'from' {self.first}: 'to' is the last day shown "
                               "(inclusive), so it must be on or after 'from'")

    def utc_bounds(self, zone: ZoneInfo) -> tuple[datetime | None, datetime | None]:
        """The range as UTC instants ``[start, end)``: local midnight of ``first``, and local
        midnight of the day after ``last``."""
        start = None if self.first is None else datetime.combine(self.first, time(0), zone).astimezone(UTC)
        end = None if self.last is None else (
            datetime.combine(self.last + timedelta(days=1), time(0), zone).astimezone(UTC))
        return start, end


def parse_day_range(first: str | None, last: str | None) -> DayRange:
    """``from`` and ``to`` as an operator types them (YYYY-MM-DD, empty: open)."""
    return DayRange(_day(first, "from"), _day(last, "to"))


def _day(text: str | None, what: str) -> date | None:
    if text is None or not text.strip():
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise BadDateError(f"'{what}' {text!r} is not a day YYYY-MM-DD (a local day in the operator's zone, "
                           "e.g. 2026-10-25)") from None


def customer_of(session: Session, code: str) -> Customer:
    customer = session.get(Customer, code)
    if customer is None:
        raise UnknownCustomerError(code)
    return customer


# --- calls -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnbilledCalls:
    """A customer's unbilled calls: how many, their charges' exact sum, and how many of them
    are in files not rated yet (a run does not bill those yet)."""

    calls: int
    charge_micros: int  # millionths of the currency unit, exact
    in_unrated_files: int

    def charge_minor(self, money: Currency) -> int:
        """The sum rounded once, half up, to the minor unit: what a "Call Charges" line would say."""
        return call_charges_minor(self.charge_micros, money)


@dataclass(frozen=True)
class CallRow:
    """One call as the unbilled view lists it."""

    id: int
    start: datetime  # in the operator's zone
    cli: str
    dialled: str
    destination: str | None
    band: str | None
    duration: int  # seconds
    billable_seconds: int | None
    charge: Decimal | None
    status: str  # the call's: rated | unrated | unmatched | reversed
    set_aside: bool  # an overlapping call kept out of billing
    invoice_number: str | None
    file_id: str


@dataclass(frozen=True)
class CallsPage:
    """The unbilled totals over the range, then one page of the calls asked for (by start)."""

    customer: Customer
    days: DayRange
    unbilled: UnbilledCalls
    matched: int  # calls the filter matches, over every page
    calls: tuple[CallRow, ...]


_RATED_FILES = select(File.id).where(File.status == "rated")
"""Files whose calls a run may bill: every call of them stored (as ``billing._RATED_FILES``)."""


def _unbilled(stmt: Select) -> Select:  # type: ignore[type-arg]
    return stmt.where(Call.status == "rated", Call.set_aside.is_(False), Call.invoice_id.is_(None))


def _in_days(stmt: Select, days: DayRange, zone: ZoneInfo) -> Select:  # type: ignore[type-arg]
    start, end = days.utc_bounds(zone)
    if start is not None:
        stmt = stmt.where(Call.start >= start)
    if end is not None:
        stmt = stmt.where(Call.start < end)
    return stmt


def unbilled_calls(session: Session, customer: str, days: DayRange, zone: ZoneInfo) -> UnbilledCalls:
    """The totals of ``customer``'s unbilled calls that started within ``days``."""
    micros = type_coerce(Call.charge, BigInteger)  # the stored integer, not a Decimal per row
    count, total, unrated = session.execute(_in_days(_unbilled(select(
        func.count(Call.id), func.coalesce(func.sum(micros), 0),
        func.coalesce(func.sum(case((Call.file_id.in_(_RATED_FILES), 0), else_=1)), 0),
    ).where(Call.customer == customer)), days, zone)).one()
    return UnbilledCalls(int(count), int(total), int(unrated))


def customer_calls(session: Session, code: str, zone: ZoneInfo, *, days: DayRange = DayRange(),
                   unbilled_only: bool = False, limit: int = 100, offset: int = 0) -> CallsPage:
    """``code``'s calls within ``days`` (only the unbilled ones with ``unbilled_only``), ordered
    by start, one page of them, after the unbilled totals over the same days."""
    customer = customer_of(session, code)
    stmt = select(Call, Invoice.number).outerjoin(Invoice, Invoice.id == Call.invoice_id).where(Call.customer == code)
    stmt = _in_days(_unbilled(stmt) if unbilled_only else stmt, days, zone)
    matched = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery()))
    rows = session.execute(stmt.order_by(Call.start, Call.id).limit(limit).offset(offset)).all()
    calls = tuple(CallRow(id=c.id, start=c.start.astimezone(zone), cli=c.cli, dialled=c.dialled,
                          destination=c.destination, band=c.band, duration=c.duration,
                          billable_seconds=c.billable_seconds, charge=c.charge, status=c.status,
                          set_aside=c.set_aside, invoice_number=number, file_id=c.file_id) for c, number in rows)
    return CallsPage(customer, days, unbilled_calls(session, code, days, zone), int(matched or 0), calls)


# --- charges and fixed fees ------------------------------------------------------------------


@dataclass(frozen=True)
class UnbilledItem:
    """A charge or fixed fee not billed yet, as the invoice line it becomes."""

    kind: str  # RECURRING | ONE_OFF | FEE
    description: str
    quantity: int
    amount_minor: int  # the line's amount in minor units (quantity included); negative for a credit
    next_run: bool  # the customer's next billing run bills it
    charge_id: int | None = None  # the customer charge (recurring, one-off)
    carrier_transaction_id: int | None = None  # the fixed fee
    covered_from: date | None = None
    covered_to: date | None = None  # exclusive
    charge_on: date | None = None  # a fee's day / a one-off's day
    file_id: str | None = None  # a fee's file


@dataclass(frozen=True)
class UnbilledCharges:
    """A customer's charges and fixed fees not billed yet, and the period of its next run."""

    customer: Customer
    money: Currency
    next_period: Period
    items: tuple[UnbilledItem, ...]

    @property
    def total_minor(self) -> int:
        return sum(i.amount_minor for i in self.items)

    @property
    def next_run_minor(self) -> int:
        """What the next run bills of them."""
        return sum(i.amount_minor for i in self.items if i.next_run)


def next_period(session: Session, customer: Customer, now: datetime, zone: ZoneInfo) -> Period:
    """The period the customer's next billing run closes: the first period of its schedule
    from where the scheduler bills it from (``runs.billing_since``) that has no run (nor an
    invoice: one issued before runs were recorded counts as its run, as ``runs`` counts it), or,
    when there is nowhere to start from, the latest ended one, or the first after it with none."""
    schedule = schedule_of(customer)
    closed = closed_periods(session, customer.code) | {Period(start, end) for start, end in session.execute(
        select(Invoice.period_start, Invoice.period_end).where(Invoice.customer == customer.code))}
    since = billing_since(session, customer, zone)
    period = schedule.period_containing(since) if since is not None else latest_ended_period(schedule, now, zone)
    while period in closed:
        period = schedule.next_period(period)
    return period


def unbilled_charges(session: Session, code: str, now: datetime, zone: ZoneInfo) -> UnbilledCharges:
    """``code``'s recurring charges as the next run bills them, its one-off charges not billed,
    and its priced fixed fees on no invoice (``next_run`` says which the next run takes)."""
    customer = customer_of(session, code)
    money = currency(customer.currency)
    period = next_period(session, customer, now, zone)
    schedule = schedule_of(customer)
    items: list[UnbilledItem] = []
    for row in session.scalars(select(CustomerCharge).where(CustomerCharge.customer == code)
                               .order_by(CustomerCharge.id)):
        if row.frequency == ONCE:
            if row.billed_until is None:
                due = charges_due(charge_of(row), schedule, period, None)
                items.append(UnbilledItem(ONE_OFF, row.description, row.quantity,
                                          to_minor(row.amount * row.quantity, money), bool(due.lines),
                                          charge_id=row.id, charge_on=row.start))
            continue
        due = charges_due(charge_of(row), schedule, period, row.billed_until)
        items += [UnbilledItem(RECURRING, line.description, line.quantity, line.amount_minor, True,
                               charge_id=row.id, covered_from=line.covered_from, covered_to=line.covered_to)
                  for line in due.lines]
    t = BillingTransaction
    rated = {f for (f,) in session.execute(select(File.id).where(
        File.id.in_(select(t.file_id).where(t.customer == code, t.status == "priced", t.invoice_id.is_(None))),
        File.status == "rated"))}
    for fee in session.scalars(select(t).where(t.customer == code, t.status == "priced", t.invoice_id.is_(None))
                               .order_by(t.charge_on.asc().nulls_first(), t.carrier_transaction_id)):
        if fee.price is None:  # a run refuses it too (billing, step 2)
            raise InputError(f"billing transaction {fee.carrier_transaction_id} of customer {code} is priced but "
                             "has no price: price it again (its fee sheet) before billing")
        due = fee.file_id in rated and (fee.charge_on is None or fee.charge_on < period.end)
        items.append(UnbilledItem(FEE, fee.description or FIXED_FEE, fee.quantity, to_minor(fee.price, money), due,
                                  carrier_transaction_id=fee.carrier_transaction_id, charge_on=fee.charge_on,
                                  file_id=fee.file_id))
    return UnbilledCharges(customer, money, period, tuple(items))
