"""Billing periods are calendar months in the operator's time zone; ends are exclusive."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

from cdrflow.errors import InputError

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


@dataclass(frozen=True)
class Period:
    start: date  # first day
    end: date  # first day after the period (exclusive)

    @property
    def label(self) -> str:
        return f"{self.start:%Y-%m}"

    def utc_bounds(self, zone: ZoneInfo) -> tuple[datetime, datetime]:
        """The period's start and (exclusive) end as UTC instants: local midnights in ``zone``."""
        return (
            datetime.combine(self.start, time(0), zone).astimezone(UTC),
            datetime.combine(self.end, time(0), zone).astimezone(UTC),
        )


def month_period(label: str) -> Period:
    match = _MONTH.match(label.strip())
    if not match:
        raise InputError(f"billing period {label!r} is not a month in the form YYYY-MM")
    year, month = int(match[1]), int(match[2])
    start = date(year, month, 1)
    end = date(year + month // 12, month % 12 + 1, 1)
    return Period(start, end)
