"""Normalised records as CSV (``cdrflow parse -o``): one line per data row, read or rejected.

Times are ISO 8601 with offset (UTC); money is an exact decimal string. For call records,
``duration`` is the whole call (end − start, when the format gives an end) and
``billable_seconds`` the answered part the switch reported (what rating uses). A cell a
spreadsheet could run as a formula is written with a quote in front (``cdrflow.csvsafe``).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TextIO

from cdrflow.csvsafe import SafeWriter
from cdrflow.money import from_micros
from services.parser.engine import ParsedBatch

CDR_HEADER = ("row", "cli", "dialled", "start", "end", "duration", "billable_seconds", "answered", "charge_code",
              "cost", "account_code", "direction", "status", "reason")
SDR_HEADER = ("row", "reference", "description", "event_type", "period_start", "period_end", "effective_date",
              "quantity", "amount", "pro_rata", "account_code", "status", "reason")


@dataclass
class Counts:
    rows: int = 0
    records: int = 0
    rejected: int = 0
    skipped: int = 0


def _money(micros: int | None) -> str:
    return "" if micros is None else f"{from_micros(micros).normalize():f}"


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _cdr_line(rec: dict) -> list[str]:
    start, end = rec["start"], rec["end"]
    whole = int((end - start).total_seconds()) if end is not None and end >= start else rec["duration"]
    return [str(rec["row"]), rec["cli"], rec["dialled"], start.isoformat(), end.isoformat() if end else "",
            str(whole), str(rec["duration"]), _text(rec["answered"]), _text(rec["charge_code"]), _money(rec["cost"]),
            _text(rec["account_code"]), _text(rec["direction"]), "ok", ""]


def _sdr_line(rec: dict) -> list[str]:
    return [str(rec["row"]), _text(rec["reference"]), _text(rec["description"]), _text(rec["event_type"]),
            _text(rec["period_start"]), _text(rec["period_end"]), _text(rec["effective_date"]), _text(rec["quantity"]),
            _money(rec["amount"]), _text(rec["pro_rata"]), _text(rec["account_code"]), "ok", ""]


def write_csv(batches: Iterable[ParsedBatch], out: TextIO, *, kind: str = "cdr") -> Counts:
    header = CDR_HEADER if kind == "cdr" else SDR_HEADER
    line = _cdr_line if kind == "cdr" else _sdr_line
    writer = SafeWriter(out, lineterminator="\n")
    writer.writerow(header)
    counts = Counts()
    blank = [""] * (len(header) - 3)
    for batch in batches:
        counts.rows += batch.rows
        counts.records += batch.records.height
        counts.rejected += len(batch.rejects)
        counts.skipped += batch.skipped
        good = ((rec["row"], line(rec)) for rec in batch.records.iter_rows(named=True))
        bad = ((r.row, [str(r.row), *blank, "rejected", r.reason]) for r in batch.rejects)
        writer.writerows(item for _, item in heapq.merge(good, bad, key=lambda t: t[0]))
    return counts
