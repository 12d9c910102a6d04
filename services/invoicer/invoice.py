"""Invoice arithmetic and the CSV of calls that goes with each invoice (pure functions)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from cdrflow.csvsafe import SafeWriter
from cdrflow.money import ZERO, format_money

CALL_CHARGES = "Call Charges"
CSV_HEADER = ("file_id", "row", "carrier", "cli", "dialled", "start", "duration", "charge")


@dataclass(frozen=True)
class InvoiceCall:
    file_id: str
    row: int
    carrier: str
    cli: str
    dialled: str
    start: datetime
    duration: int
    charge: Decimal


def call_charges_total(calls: Sequence[InvoiceCall]) -> Decimal:
    """Sum of each call's already-rounded charge: the invoice equals the sum of its lines."""
    return sum((c.charge for c in calls), ZERO)


def calls_csv(calls: Sequence[InvoiceCall], zone: ZoneInfo) -> bytes:
    """The call list a customer receives with the invoice; times in the operator's zone; cells a
    spreadsheet could run as a formula quoted (``cdrflow.csvsafe``)."""
    out = io.StringIO()
    writer = SafeWriter(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for c in sorted(calls, key=lambda c: (c.start, c.file_id, c.row)):
        writer.writerow((c.file_id, c.row, c.carrier, c.cli, c.dialled, c.start.astimezone(zone).isoformat(),
                         c.duration, format_money(c.charge)))
    return out.getvalue().encode("utf-8")
