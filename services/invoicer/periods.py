"""Billing periods and the billing schedules that cut time into them (pure functions).

A period is ``[start, end)`` of *local dates* in the operator's zone: it begins at local
midnight of ``start`` and ends, exclusive, at local midnight of ``end``. Consecutive periods of
one schedule tile time: each period's ``end`` is the next one's ``start``.

A customer's billing schedule is one of (syntax in docs/billing-schedules.md):

- ``weekly[:DAY]``: seven days from a weekday (``mon`` … ``sun``, default ``mon``);
- ``monthly[:D]``: from day ``D`` (1–28, default 1) of a month to day ``D`` of the next;
- ``quarterly[:M[:D]]``: three months from day ``D`` (1–28, default 1) of a quarter's first
  month, ``M`` 1–3 (default 1) choosing quarters that start in Jan/Apr/Jul/Oct, Feb/May/Aug/Nov
  or Mar/Jun/Sep/Dec.

Anchor days stop at 28 so that every month has the day a period starts on. The text form of a
schedule is at most 14 characters (``quarterly:3:28``): it fits the customers' column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from cdrflow.errors import InputError

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_QUARTER = re.compile(r"^(\d{4})-Q([1-4])$", re.IGNORECASE)
_ISO_WEEK = re.compile(r"^(\d{4})-W(\d{2})$", re.IGNORECASE)
_DATE = r"\d{4}-\d{2}-\d{2}"
_DAY = re.compile(rf"^({_DATE})$")
_RANGE = re.compile(rf"^({_DATE})\.\.({_DATE})$")

WEEKLY, MONTHLY, QUARTERLY = "weekly", "monthly", "quarterly"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = date.weekday()
_WEEKDAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTH_NAMES = ("january", "february", "march", "april", "may", "june", "july", "august", "september",
                "october", "november", "december")
LAST_ANCHOR_DAY = 28
DEFAULT_ZONE = ZoneInfo("Europe/London")
DEFAULT_GRACE = timedelta(hours=24)
"""How long after a period's end its billing run waits for late files."""

SCHEDULE_SYNTAX = (
    "weekly[:DAY] (DAY mon, tue, … sun or the full name; default mon), "
    "monthly[:D] (D the day periods start, 1-28; default 1) or "
    "quarterly[:M[:D]] (M 1, 2 or 3: quarters starting Jan/Apr/Jul/Oct, Feb/May/Aug/Nov or "
    "Mar/Jun/Sep/Dec, or a month name; D 1-28; defaults 1)"
)
PERIOD_SYNTAX = (
    "the period's first day YYYY-MM-DD, or its label: YYYY-MM (a calendar month), YYYY-Qn (a "
    "calendar quarter), YYYY-Www (an ISO week, Monday to Sunday) or FIRST..LAST (its first and "
    "last days, YYYY-MM-DD..YYYY-MM-DD)"
)


def add_months(day: date, months: int) -> date:
    """The same day of the month ``months`` later (or earlier); ``day.day`` must be at most 28."""
    index = day.year * 12 + day.month - 1 + months
    return day.replace(year=index // 12, month=index % 12 + 1)


@dataclass(frozen=True)
class Period:
    """A billing period: local dates ``[start, end)`` in the operator's zone."""

    start: date  # first day
    end: date  # first day after the period (exclusive)

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise InputError(f"a billing period must end after it starts: {self.start} to {self.end}")

    @property
    def last_day(self) -> date:
        return self.end - timedelta(days=1)

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    @property
    def label(self) -> str:
        """What operators and invoices call the period, from its dates alone.

        A calendar month is ``2026-11``, a calendar quarter ``2026-Q4``, a Monday-to-Sunday
        week its ISO week ``2026-W47`` (ISO year: 2026-12-28 is in ``2026-W53``), and any
        other period its first and last days, ``2026-11-15..2026-12-14`` (last day inclusive,
        as people read a date range; ``end`` stays exclusive everywhere else).
        """
        if self.start.day == 1 and self.end == add_months(self.start, 1):
            return f"{self.start:%Y-%m}"
        if self.start.day == 1 and self.start.month % 3 == 1 and self.end == add_months(self.start, 3):
            return f"{self.start.year}-Q{self.start.month // 3 + 1}"
        if self.start.weekday() == 0 and self.days == 7:
            year, week, _ = self.start.isocalendar()
            return f"{year}-W{week:02d}"
        return f"{self.start.isoformat()}..{self.last_day.isoformat()}"

    def utc_bounds(self, zone: ZoneInfo) -> tuple[datetime, datetime]:
        """The period's start and (exclusive) end as UTC instants: local midnights in ``zone``.

        Across a clock change a period is an hour shorter or longer than its days suggest:
        the London week of 2026-10-19 (clocks back on the 25th) lasts 169 hours.
        """
        return (
            datetime.combine(self.start, time(0), zone).astimezone(UTC),
            datetime.combine(self.end, time(0), zone).astimezone(UTC),
        )


def month_period(label: str) -> Period:
    """The calendar month ``YYYY-MM`` (the period of the default schedule, ``monthly``)."""
    match = _MONTH.match(label.strip())
    if not match:
        raise InputError(f"billing period {label!r} is not a month in the form YYYY-MM")
    start = date(int(match[1]), int(match[2]), 1)
    return Period(start, add_months(start, 1))


@dataclass(frozen=True)
class BillingSchedule:
    """How a customer's time is cut into billing periods.

    Only the fields of its kind vary; the others keep their defaults, so two equal schedules
    are one schedule. Build one with ``parse`` or ``weekly``/``monthly``/``quarterly``.
    """

    kind: str  # WEEKLY | MONTHLY | QUARTERLY
    weekday: int = 0  # weekly: the day periods start, 0 = Monday … 6 = Sunday (date.weekday())
    day: int = 1  # monthly, quarterly: the day of the month periods start, 1-28
    month: int = 1  # quarterly: the first month of a quarter, 1-3 (1: Jan/Apr/Jul/Oct)

    def __post_init__(self) -> None:
        if self.kind not in (WEEKLY, MONTHLY, QUARTERLY):
            raise InputError(f"billing schedule kind {self.kind!r} is not weekly, monthly or quarterly")
        if not 0 <= self.weekday <= 6 or (self.kind != WEEKLY and self.weekday != 0):
            raise InputError(f"weekday {self.weekday} does not fit a {self.kind} schedule")
        if not 1 <= self.day <= LAST_ANCHOR_DAY or (self.kind == WEEKLY and self.day != 1):
            raise InputError(f"day {self.day} does not fit a {self.kind} schedule (1-{LAST_ANCHOR_DAY})")
        if not 1 <= self.month <= 3 or (self.kind != QUARTERLY and self.month != 1):
            raise InputError(f"month {self.month} does not fit a {self.kind} schedule (quarterly: 1-3)")

    @classmethod
    def weekly(cls, weekday: int = 0) -> BillingSchedule:
        return cls(WEEKLY, weekday=weekday)

    @classmethod
    def monthly(cls, day: int = 1) -> BillingSchedule:
        return cls(MONTHLY, day=day)

    @classmethod
    def quarterly(cls, month: int = 1, day: int = 1) -> BillingSchedule:
        return cls(QUARTERLY, month=month, day=day)

    @classmethod
    def parse(cls, text: str) -> BillingSchedule:
        """Read a schedule as an operator writes it: ``monthly``, ``monthly:15``, ``weekly:fri``,
        ``weekly:friday``, ``quarterly``, ``quarterly:2``, ``quarterly:feb:15``; any case."""
        kind, *args = [part.strip() for part in text.strip().lower().split(":")]
        if kind not in (WEEKLY, MONTHLY, QUARTERLY) or len(args) > (2 if kind == QUARTERLY else 1):
            raise InputError(f"billing schedule {text!r} is not understood: use {SCHEDULE_SYNTAX}")
        if kind == WEEKLY:
            return cls.weekly(_weekday(args[0], text) if args else 0)
        if kind == MONTHLY:
            return cls.monthly(_anchor_day(args[0], text) if args else 1)
        month = _quarter_month(args[0], text) if args else 1
        return cls.quarterly(month, _anchor_day(args[1], text) if len(args) > 1 else 1)

    def __str__(self) -> str:
        """The canonical text ``parse`` reads back: defaults left out (``monthly``, not ``monthly:1``)."""
        if self.kind == WEEKLY:
            return WEEKLY if self.weekday == 0 else f"{WEEKLY}:{WEEKDAYS[self.weekday]}"
        if self.kind == MONTHLY:
            return MONTHLY if self.day == 1 else f"{MONTHLY}:{self.day}"
        if self.day != 1:
            return f"{QUARTERLY}:{self.month}:{self.day}"
        return QUARTERLY if self.month == 1 else f"{QUARTERLY}:{self.month}"

    def describe(self) -> str:
        """The schedule in words, for error messages and the console."""
        if self.kind == WEEKLY:
            return f"weekly periods start on {_WEEKDAY_NAMES[self.weekday].capitalize()}"
        if self.kind == MONTHLY:
            if self.day == 1:
                return "monthly periods are calendar months"
            return f"monthly periods run from day {self.day} of a month to day {self.day - 1} of the next"
        months = ", ".join(_MONTHS[m - 1].capitalize() for m in range(self.month, 13, 3))
        return f"quarterly periods start on day {self.day} of {months}"

    def period_containing(self, day: date) -> Period:
        """The period of this schedule that ``day`` (a local date) falls in."""
        if self.kind == WEEKLY:
            start = day - timedelta(days=(day.weekday() - self.weekday) % 7)
            return Period(start, start + timedelta(days=7))
        months = 1 if self.kind == MONTHLY else 3
        # The candidate start in day's own month, moved back to a quarter's first month.
        start = add_months(date(day.year, day.month, self.day), -((day.month - self.month) % months))
        if start > day:
            start = add_months(start, -months)
        return Period(start, add_months(start, months))

    def next_period(self, period: Period) -> Period:
        """The period after ``period``, which must be one of this schedule's."""
        self.check_period(period)
        return self.period_containing(period.end)

    def previous_period(self, period: Period) -> Period:
        self.check_period(period)
        return self.period_containing(period.start - timedelta(days=1))

    def check_period(self, period: Period) -> None:
        """Refuse a period that is not one of this schedule's (a hand-made or stale one)."""
        own = self.period_containing(period.start)
        if own != period:
            raise InputError(f"{period.label} is not a billing period of schedule {self}: {self.describe()}; "
                             f"the period containing {period.start} is {own.label}")


def parse_period(text: str, schedule: BillingSchedule) -> Period:
    """The period of ``schedule`` an operator names by hand (``--period``).

    Accepted: a period's first day (``2026-11-15``) or its label (``2026-11``, ``2026-Q4``,
    ``2026-W47``, ``2026-11-15..2026-12-14``), so ``parse_period(p.label, s) == p``. A text
    that names days which are not exactly one period of the schedule is refused, naming the
    period that contains its first day: a hand-made run must never bill a made-up period.
    """
    given = text.strip()
    if _DAY.match(given):
        first = _named_period(given, text).start
        own = schedule.period_containing(first)
        if own.start != first:
            raise InputError(
                f"billing period {text!r} is not the first day of a period of schedule {schedule}: "
                f"{schedule.describe()}; {first} is in {own.label} (give {own.label} or {own.start})")
        return own
    candidate = _named_period(given, text)
    own = schedule.period_containing(candidate.start)
    if own != candidate:
        overlapping = [own]
        while overlapping[-1].end < candidate.end and len(overlapping) < 3:
            overlapping.append(schedule.period_containing(overlapping[-1].end))
        names = " and ".join(f"{p.label} (first day {p.start})" for p in overlapping)
        raise InputError(
            f"billing period {text!r} is not a period of schedule {schedule}: {schedule.describe()}; "
            f"{given} overlaps {names}: give one of these labels or first days")
    return own


def closable_periods(schedule: BillingSchedule, since: date | None, now: datetime, zone: ZoneInfo = DEFAULT_ZONE,
                     grace: timedelta = DEFAULT_GRACE) -> list[Period]:
    """The periods whose billing run may be closed at ``now``, oldest first.

    A period is closable once its end (local midnight in ``zone``) plus ``grace`` has passed,
    that instant included: late files get ``grace`` to arrive. With ``since`` (the customer's
    first day, or the end of its last closed period) every closable period that ends after
    ``since`` is returned, the one containing ``since`` included; with ``since=None`` only the
    latest closable one. Closing each of them once is the caller's job (one invoice per
    customer and period).
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got {now!r}")
    if grace < timedelta(0):
        raise ValueError(f"grace must not be negative, got {grace}")
    # Elapsed-time arithmetic in UTC: an aware datetime in a ZoneInfo subtracts wall-clock time.
    cutoff_day = (now.astimezone(UTC) - grace).astimezone(zone).date()
    # Every period ending on or before cutoff_day ended (local midnight) at or before now - grace;
    # the one containing cutoff_day ends after it.
    latest = schedule.previous_period(schedule.period_containing(cutoff_day))
    if since is None:
        return [latest]
    periods: list[Period] = []
    period = schedule.period_containing(since)
    while period.start <= latest.start:
        periods.append(period)
        period = schedule.next_period(period)
    return periods


# --- parsing helpers ---------------------------------------------------------------


def _weekday(arg: str, text: str) -> int:
    for names in (WEEKDAYS, _WEEKDAY_NAMES):
        if arg in names:
            return names.index(arg)
    raise InputError(f"billing schedule {text!r}: {arg!r} is not a weekday; use mon, tue, wed, thu, fri, sat or "
                     "sun, or the full name (a number would be ambiguous: is Sunday 0 or 7?)")


def _anchor_day(arg: str, text: str) -> int:
    if not arg.isdigit() or not 1 <= int(arg) <= LAST_ANCHOR_DAY:
        raise InputError(f"billing schedule {text!r}: day {arg!r} is not a day 1-{LAST_ANCHOR_DAY} (a period can't "
                         f"start on a day that some months lack; for periods ending with the month use day 1)")
    return int(arg)


def _quarter_month(arg: str, text: str) -> int:
    if arg.isdigit() and 1 <= int(arg) <= 3:
        return int(arg)
    for names in (_MONTHS, _MONTH_NAMES):
        if arg in names:
            return names.index(arg) % 3 + 1
    raise InputError(f"billing schedule {text!r}: {arg!r} is not a quarter's first month; use 1 (quarters start "
                     "in Jan, Apr, Jul, Oct), 2 (Feb, May, Aug, Nov), 3 (Mar, Jun, Sep, Dec) or a month name")


def _named_period(given: str, text: str) -> Period:
    """The days a period text names, before checking they are a period of the schedule."""
    try:
        if match := _DAY.match(given):
            start = date.fromisoformat(match[1])
            return Period(start, start + timedelta(days=1))
        if match := _MONTH.match(given):
            return month_period(given)
        if match := _QUARTER.match(given):
            start = date(int(match[1]), 3 * int(match[2]) - 2, 1)
            return Period(start, add_months(start, 3))
        if match := _ISO_WEEK.match(given):
            start = date.fromisocalendar(int(match[1]), int(match[2]), 1)
            return Period(start, start + timedelta(days=7))
        if match := _RANGE.match(given):
            first, last = date.fromisoformat(match[1]), date.fromisoformat(match[2])
            if last < first:
                raise InputError(f"billing period {text!r} ends before it starts")
            return Period(first, last + timedelta(days=1))
    except ValueError as exc:
        raise InputError(f"billing period {text!r} names a day that does not exist ({exc})") from exc
    raise InputError(f"billing period {text!r} is not understood: give {PERIOD_SYNTAX}")
