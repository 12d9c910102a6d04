"""The CSV of calls that goes with each invoice (a pure function; ``render`` reads the calls).

The invoice's figures are worked out by ``services.invoicer.tax`` and ``billing``; this is the
list a customer checks them against: one row per call, in call order."""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from cdrflow.csvsafe import SafeWriter

CSV_HEADER = ("Date", "Time", "CLI", "Dialled number", "Destination", "Band", "Duration (s)", "Billable seconds",
              "Charge")
"""Date and time are the call's start, local in the operator's zone; the charge is as rated."""


@dataclass(frozen=True)
class InvoiceCall:
    """One call as its invoice's CSV lists it; ``charge`` in currency units, exact."""

    start: datetime  # aware
    cli: str
    dialled: str
    destination: str | None
    band: str | None
    duration: int  # seconds
    billable_seconds: int | None
    charge: Decimal | None


def calls_csv(calls: Iterable[InvoiceCall], zone: ZoneInfo) -> bytes:
    """The call list, in the order given (the caller's: start, then file and row); times in
    ``zone``; cells a spreadsheet could run as a formula quoted (``cdrflow.csvsafe``)."""
    out = io.StringIO()
    writer = SafeWriter(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for c in calls:
        local = c.start.astimezone(zone)
        writer.writerow((local.strftime("%Y-%m-%d"), local.strftime("%H:%M:%S"), c.cli, c.dialled,
                         c.destination or "", c.band or "", c.duration, c.billable_seconds, charge_text(c.charge)))
    return out.getvalue().encode("utf-8")


def charge_text(charge: Decimal | None) -> str:
    """A call's charge as rated: at least 4 places ("0.0313"), more only when it has them ("0.123450"
    stays "0.12345"); a credit stays a number ("-0.0150")."""
    if charge is None:
        return ""
    four = charge.quantize(Decimal("0.0001"))
    return f"{four:f}" if four == charge else f"{charge.normalize():f}"
