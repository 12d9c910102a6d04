"""Recurring and one-off charges defined in cdrflow, and what a billing run bills of them (pure).

The rules, in the order they apply at the billing run that closes a customer's period ``P``
(worked examples in docs/billing-schedules.md, each asserted by tests/unit/test_recurring.py):

1. **Charge periods.** A recurring charge's amount is per *charge period* of its frequency,
   laid on the customer's billing schedule so that a whole charge period is a whole number of
   billing periods where it can be: charge periods start on the schedule's day of the month
   (the 1st for a weekly schedule), and quarters and years start in the schedule's first month
   (January unless a quarterly schedule says Feb or Mar). A monthly charge of a ``monthly:15``
   customer runs from the 15th to the 15th; a yearly charge of a ``quarterly:2`` customer from
   1 February.
2. **Credit first.** If the charge was billed past its end (it was ended after being billed
   in advance), the days from its end to ``billed_until`` are credited: negative lines, one
   per charge period touched, pro-rated as in 4, and ``billed_until`` moves back to the end.
3. **In advance.** Otherwise the run bills every day not yet billed, from ``billed_until`` (or
   the charge's start when nothing was billed) up to the end of the last charge period that
   starts before the end of ``P+1``, the next billing period, and not past the charge's end.
   So a monthly charge of a monthly customer is billed for December at the run closing
   November, and the first run after a charge starts also bills the part of the current
   period not yet billed. A charge starting later than ``P+1`` waits for a later run.
4. **Pro-rata by days, only at the edges.** One line per charge period. A charge period
   covered in full costs ``amount × quantity``; one cut by the charge's start or end costs
   ``amount × quantity × days covered / days in that charge period``. Each line's amount is
   rounded once, half up (ties away from zero, so a credit mirrors a charge), to the penny.
5. **One-off charges** (installation, equipment) are billed once, in full, at the first run
   whose period ends after the charge's day.

Dates are local dates; every ``end``/``covered_to``/``billed_until`` is exclusive (the first
day *not* charged), as billing periods are. The caller stores ``ChargesDue.billed_until`` with
the lines, in the same transaction, and passes it back at the next run: that is what makes a
day billed once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext

from cdrflow.errors import InputError
from services.invoicer.periods import WEEKLY, BillingSchedule, Period

MONTHLY, QUARTERLY, YEARLY = "monthly", "quarterly", "yearly"
FREQUENCIES = (MONTHLY, QUARTERLY, YEARLY)
_PENNIES = Decimal(100)


@dataclass(frozen=True)
class RecurringCharge:
    """A charge billed every charge period from ``start`` until ``end`` (exclusive) or for ever."""

    description: str
    amount: Decimal  # pounds per charge period per unit; negative for a recurring credit
    frequency: str  # MONTHLY | QUARTERLY | YEARLY
    start: date  # first day charged
    end: date | None = None  # first day no longer charged (exclusive); None: until ended
    quantity: int = 1

    def __post_init__(self) -> None:
        _check_common(self.description, self.amount, self.quantity)
        if self.frequency not in FREQUENCIES:
            raise InputError(f"charge {self.description!r}: frequency {self.frequency!r} is not one of "
                             f"{', '.join(FREQUENCIES)}")
        if self.end is not None and self.end <= self.start:
            raise InputError(f"charge {self.description!r} ends on {self.end}, not after it starts on {self.start}: "
                             "the end is the first day no longer charged, so it must be after the start")


@dataclass(frozen=True)
class OneOffCharge:
    """A charge billed once (installation, equipment), at the first run whose period ends after ``on``."""

    description: str
    amount: Decimal  # pounds per unit; negative for a one-off credit
    on: date
    quantity: int = 1

    def __post_init__(self) -> None:
        _check_common(self.description, self.amount, self.quantity)


@dataclass(frozen=True)
class ChargeLine:
    """One line of an invoice for a charge: what it covers and what it costs."""

    description: str  # the charge's description and the covered days, first..last
    quantity: int
    amount_minor: int  # pennies for the line (quantity included); negative for a credit
    covered_from: date  # first day covered
    covered_to: date  # first day after (exclusive)


@dataclass(frozen=True)
class ChargesDue:
    """The lines a billing run bills for one charge, and what to store as billed afterwards."""

    lines: tuple[ChargeLine, ...]
    billed_until: date | None  # exclusive; unchanged when nothing is due


Charge = RecurringCharge | OneOffCharge


def charges_due(charge: Charge, schedule: BillingSchedule, period: Period, billed_until: date | None) -> ChargesDue:
    """What the billing run closing ``period`` (one of ``schedule``'s) bills for ``charge``,
    given that days before ``billed_until`` (exclusive) were billed by earlier runs."""
    if isinstance(charge, OneOffCharge):
        return _one_off_due(charge, period, billed_until)
    following = schedule.next_period(period)  # also refuses a period that is not the schedule's
    if charge.end is not None and billed_until is not None and billed_until > charge.end:
        lines = [_line(charge, grid, first, until, credit=True)
                 for first, until, grid in _pieces(charge.frequency, schedule, charge.end, billed_until)]
        return ChargesDue(tuple(lines), charge.end)
    horizon = charge_period_containing(charge.frequency, schedule, following.last_day).end
    first = max(charge.start, billed_until) if billed_until is not None else charge.start
    until = horizon if charge.end is None else min(horizon, charge.end)
    if until <= first:
        return ChargesDue((), billed_until)
    pieces = _pieces(charge.frequency, schedule, first, until)
    lines = [_line(charge, grid, a, b, credit=False) for a, b, grid in pieces]
    return ChargesDue(tuple(lines), until)


def charge_period_containing(frequency: str, schedule: BillingSchedule, day: date) -> Period:
    """The charge period of ``frequency`` that ``day`` falls in, laid on ``schedule`` (rule 1)."""
    anchor_day = 1 if schedule.kind == WEEKLY else schedule.day
    if frequency == MONTHLY:
        return BillingSchedule.monthly(anchor_day).period_containing(day)
    if frequency == QUARTERLY:
        return BillingSchedule.quarterly(schedule.month, anchor_day).period_containing(day)
    if frequency == YEARLY:
        start = date(day.year, schedule.month, anchor_day)
        if start > day:
            start = start.replace(year=day.year - 1)
        return Period(start, start.replace(year=start.year + 1))
    raise InputError(f"frequency {frequency!r} is not one of {', '.join(FREQUENCIES)}")


def _one_off_due(charge: OneOffCharge, period: Period, billed_until: date | None) -> ChargesDue:
    if billed_until is not None or charge.on >= period.end:
        return ChargesDue((), billed_until)
    line = ChargeLine(f"{charge.description} {charge.on.isoformat()}", charge.quantity,
                      _pennies(charge.amount * charge.quantity), charge.on, charge.on + timedelta(days=1))
    return ChargesDue((line,), line.covered_to)


def _pieces(frequency: str, schedule: BillingSchedule, first: date, until: date) -> Iterator[tuple[date, date, Period]]:
    """``[first, until)`` cut at charge period boundaries: (from, to, the charge period) each."""
    while first < until:
        grid = charge_period_containing(frequency, schedule, first)
        end = min(grid.end, until)
        yield first, end, grid
        first = end


def _line(charge: RecurringCharge, grid: Period, first: date, until: date, *, credit: bool) -> ChargeLine:
    days = (until - first).days
    amount = charge.amount * charge.quantity
    dates = f"{first.isoformat()}..{(until - timedelta(days=1)).isoformat()}"
    if days == grid.days:
        minor, part = _pennies(amount), ""
    else:
        with localcontext() as exact:
            exact.prec = 60  # the quotient is rounded once below; nothing is lost before that
            minor, part = _pennies(amount * days / grid.days), f" ({days} of {grid.days} days)"
    if credit:
        return ChargeLine(f"Credit: {charge.description} {dates}{part}, charge ended", charge.quantity,
                          -minor, first, until)
    return ChargeLine(f"{charge.description} {dates}{part}", charge.quantity, minor, first, until)


def _pennies(pounds: Decimal) -> int:
    return int((pounds * _PENNIES).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _check_common(description: str, amount: Decimal, quantity: int) -> None:
    if not description.strip():
        raise InputError("a charge needs a description: it is what the customer reads on the invoice")
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise InputError(f"charge {description!r}: amount {amount!r} is not a finite Decimal (money is never float)")
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
        raise InputError(f"charge {description!r}: quantity {quantity!r} is not a whole number of at least 1 "
                         "(a credit is a negative amount, not a negative quantity)")
