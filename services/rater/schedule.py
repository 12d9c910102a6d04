"""Peak time schedules: which band (peak, offpeak, weekend) a moment falls in.

A schedule is a set of rules ``band,days,start,end`` in the operator's local time
(end exclusive, ``24:00`` allowed; an end of ``23:59`` is read as ``24:00``, the end of the day,
as operators write it: "Monday to Sunday, 00:00 to 23:59" is the whole week), e.g. the UK default::

    peak,Mon-Fri,08:00,18:00
    offpeak,Mon-Fri,00:00,08:00
    offpeak,Mon-Fri,18:00,24:00
    weekend,Sat-Sun,00:00,24:00

Every minute of the week must be covered exactly once. Compiled, a schedule is a
table of the band for each of the 10,080 minutes of the week, so a lookup is one
index; public holidays (optional) count as weekend all day.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime

import holidays as holiday_calendars
import polars as pl

from cdrflow.errors import InputError

BANDS = ("peak", "offpeak", "weekend")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 1440
WEEK = 7 * MINUTES_PER_DAY
_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")

UK_DEFAULT_RULES = """band,days,start,end
peak,Mon-Fri,08:00,18:00
offpeak,Mon-Fri,00:00,08:00
offpeak,Mon-Fri,18:00,24:00
weekend,Sat-Sun,00:00,24:00
"""


class ScheduleError(InputError):
    """A peak time schedule is not valid; nothing from it was used."""

    def __init__(self, name: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"schedule {name!r}: " + "; ".join(problems))


_DAY_NAMES = {name: n for n, names in enumerate((
    ("mon", "monday"), ("tue", "tues", "tuesday"), ("wed", "weds", "wednesday"),
    ("thu", "thur", "thurs", "thursday"), ("fri", "friday"), ("sat", "saturday"), ("sun", "sunday"),
)) for name in names}
END_OF_DAY_AS_WRITTEN = MINUTES_PER_DAY - 1
"""An end of 23:59 means the end of the day (24:00): nobody means to leave the last minute out."""


def _day(name: str) -> int:
    return _DAY_NAMES[name]  # KeyError: not a day's name


def _days(spec: str) -> list[int]:
    """``Mon-Fri``, ``Sat,Sun``, ``Monday to Sunday``, ``Fri-Mon`` (wrapping): weekday numbers."""
    out: list[int] = []
    for part in re.sub(r"\s+to\s+", "-", spec.strip().lower()).replace(" ", "").split(","):
        if "-" in part:
            first, last = part.split("-", 1)
            a, b = _day(first), _day(last)
            out.extend(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
        else:
            out.append(_day(part))
    return out


def _minute(text: str, *, end: bool = False) -> int:
    match = _TIME.match(text.strip())
    if not match or int(match[2]) > 59 or int(match[1]) * 60 + int(match[2]) > MINUTES_PER_DAY:
        raise ValueError(f"time {text!r} is not HH:MM between 00:00 and 24:00")
    minute = int(match[1]) * 60 + int(match[2])
    return MINUTES_PER_DAY if end and minute == END_OF_DAY_AS_WRITTEN else minute


def _parse_rule(band: str, days: str, start: str, end: str) -> tuple[int, list[int], int, int]:
    if band.lower() not in BANDS:
        raise ValueError(f"band {band!r} is not one of {', '.join(BANDS)}")
    try:
        day_list = _days(days)
    except (KeyError, ValueError):
        raise ValueError(f"days {days!r} are not like Mon-Fri, \"Sat,Sun\" or Monday to Sunday") from None
    first, last = _minute(start), _minute(end, end=True)
    if last <= first:
        raise ValueError(f"end {end} is not after start {start}")
    return BANDS.index(band.lower()), day_list, first, last


def _quote_hint(row: list[str]) -> str:
    """A hint for a rule whose days were written with commas and no quotes (``Sat,Sun`` splits
    into two fields): every field between the band and the two times is a day."""
    days = [c.strip() for c in row[1:-2]]
    if len(row) <= 4 or not all(c and _is_days(c) for c in days):
        return ""
    return f': days with commas go in quotes: "{",".join(days)}"'


def _is_days(text: str) -> bool:
    try:
        _days(text)
    except (KeyError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Schedule:
    name: str
    table: tuple[int, ...]  # band index (into BANDS) for each minute of the week, Monday 00:00 first
    holidays_as_weekend: bool = False
    holiday_region: str = "GB-ENG"
    _holiday_cache: dict[int, frozenset[date]] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_rules(cls, name: str, rules_csv: str, *, holidays_as_weekend: bool = False,
                   holiday_region: str = "GB-ENG") -> Schedule:
        table: list[int | None] = [None] * WEEK
        problems: list[str] = []
        reader = csv.reader(io.StringIO(rules_csv))
        for line_no, row in enumerate(reader, start=1):
            if not row or not "".join(row).strip() or (line_no == 1 and row[0].strip().lower() == "band"):
                continue
            if len(row) != 4:
                problems.append(f"line {line_no}: expected band,days,start,end, found {len(row)} field(s)"
                                + _quote_hint(row))
                continue
            band, days, start, end = (c.strip() for c in row)
            try:
                band_index, day_list, first, last = _parse_rule(band, days, start, end)
            except ValueError as exc:
                problems.append(f"line {line_no}: {exc}")
                continue
            for day in day_list:
                for minute in range(day * MINUTES_PER_DAY + first, day * MINUTES_PER_DAY + last):
                    if table[minute] is not None and table[minute] != band_index:
                        problems.append(f"line {line_no}: overlaps an earlier rule on {DAYS[day].title()} "
                                        f"at {(minute % MINUTES_PER_DAY) // 60:02d}:{minute % 60:02d}")
                        break
                    table[minute] = band_index
        gaps = [m for m, b in enumerate(table) if b is None]
        if gaps and not problems:
            m = gaps[0]
            problems.append(f"no rule covers {DAYS[m // MINUTES_PER_DAY].title()} "
                            f"{(m % MINUTES_PER_DAY) // 60:02d}:{m % 60:02d} ({len(gaps)} minute(s) of the week uncovered)")
        if problems:
            raise ScheduleError(name, problems)
        return cls(name, tuple(b for b in table if b is not None), holidays_as_weekend, holiday_region)

    def holidays(self, years: Iterable[int]) -> frozenset[date]:
        if not self.holidays_as_weekend:
            return frozenset()
        country, _, subdiv = self.holiday_region.partition("-")
        out: set[date] = set()
        for year in years:
            if year not in self._holiday_cache:
                calendar = holiday_calendars.country_holidays(country, subdiv=subdiv or None, years=[year])
                self._holiday_cache[year] = frozenset(calendar)
            out |= self._holiday_cache[year]
        return frozenset(out)

    def boundary_counts(self) -> list[int]:
        """``counts[m]``: how many band boundaries fall on minutes 1..m of the week (m = 0..WEEK),
        a boundary being a minute whose band differs from the minute before. With public
        holidays as weekend every midnight counts as a possible boundary. Used to find, without
        walking them, the calls that cannot cross a boundary."""
        counts = [0] * (WEEK + 1)
        for m in range(1, WEEK + 1):
            boundary = self.table[m % WEEK] != self.table[m - 1] or (
                self.holidays_as_weekend and m % MINUTES_PER_DAY == 0)
            counts[m] = counts[m - 1] + boundary
        return counts

    def band_at(self, local: datetime) -> str:
        """The band of a local (aware) moment."""
        if self.holidays_as_weekend and local.date() in self.holidays([local.year]):
            return "weekend"
        return BANDS[self.table[local.weekday() * MINUTES_PER_DAY + local.hour * 60 + local.minute]]

    def band_expr(self, local: pl.Expr, years: Iterable[int]) -> pl.Expr:
        """Band names for a column of local datetimes (vectorised ``band_at``)."""
        index = (local.dt.weekday().cast(pl.Int64) - 1) * MINUTES_PER_DAY + local.dt.hour().cast(pl.Int64) * 60 \
            + local.dt.minute().cast(pl.Int64)
        band = pl.lit(pl.Series("band", [BANDS[b] for b in self.table], dtype=pl.String)).gather(index)
        holidays = self.holidays(years)
        if holidays:
            band = pl.when(local.dt.date().is_in(sorted(holidays))).then(pl.lit("weekend")).otherwise(band)
        return band


UK_DEFAULT = Schedule.from_rules("uk-default", UK_DEFAULT_RULES)
