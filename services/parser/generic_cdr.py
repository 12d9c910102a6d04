"""The ``generic-cdr`` format: cdrflow's own simple, documented CSV.

    cli,dialled,start,duration[,cost]

- header row required; column names case- and space-insensitive, any order;
- ``start``: ISO 8601 date-time; one without an offset is read in the
  operator's time zone;
- ``duration``: whole seconds, 0 or more;
- ``cost``: optional carrier cost (decimal, never float).

Lines are decoded one at a time, so a line that is not UTF-8 is a rejected
row with its line number, not a failed file. Memory stays flat: the file is
streamed.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from datetime import datetime
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

from cdrflow.errors import BadFileError
from services.parser.records import CallRecord, RejectedRow

FORMAT = "generic-cdr"
REQUIRED = ("cli", "dialled", "start", "duration")
OPTIONAL = ("cost",)


def _header(raw: bytes, name: str) -> dict[str, int]:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadFileError(f"line 1: header is not UTF-8 text ({exc.reason} at byte {exc.start})", file=name) from exc
    columns = [c.strip().lower().replace(" ", "_") for c in next(csv.reader([text]), [])]
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise BadFileError(
            f"line 1: not a {FORMAT} file: header lacks {', '.join(missing)} "
            f"(expected {','.join(REQUIRED)}[,cost])",
            file=name,
        )
    return {c: columns.index(c) for c in REQUIRED + OPTIONAL if c in columns}


def parse(lines: Iterable[bytes], zone: ZoneInfo, name: str = "file") -> Iterator[CallRecord | RejectedRow]:
    """Yield a CallRecord or RejectedRow per data line. An empty or headerless file raises BadFileError."""
    it = iter(lines)
    first = next(it, None)
    if first is None or not first.strip():
        raise BadFileError("file is empty: no header line", file=name)
    cols = _header(first, name)
    width = max(cols.values()) + 1
    for number, raw in enumerate(it, start=2):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield RejectedRow(number, f"not UTF-8 text ({exc.reason} at byte {exc.start})", raw.decode("utf-8", "replace").rstrip("\r\n"))
            continue
        text = text.rstrip("\r\n")
        fields = next(csv.reader([text]), [])
        yield _record(number, fields, cols, width, zone, text)


def _record(number: int, fields: list[str], cols: dict[str, int], width: int, zone: ZoneInfo, text: str) -> CallRecord | RejectedRow:
    if len(fields) < width:
        return RejectedRow(number, f"expected {width} columns, found {len(fields)}", text)
    cli, dialled = fields[cols["cli"]].strip(), fields[cols["dialled"]].strip()
    if not cli:
        return RejectedRow(number, "cli is empty", text)
    if not dialled:
        return RejectedRow(number, "dialled is empty", text)
    raw_start = fields[cols["start"]].strip()
    try:
        start = datetime.fromisoformat(raw_start)
    except ValueError:
        return RejectedRow(number, f"start {raw_start!r} is not an ISO 8601 date-time", text)
    if start.tzinfo is None:
        start = start.replace(tzinfo=zone)
    raw_duration = fields[cols["duration"]].strip()
    if not raw_duration.isdigit():
        return RejectedRow(number, f"duration {raw_duration!r} is not a whole number of seconds", text)
    cost = None
    if "cost" in cols and fields[cols["cost"]].strip():
        raw_cost = fields[cols["cost"]].strip()
        try:
            cost = Decimal(raw_cost)
        except InvalidOperation:
            return RejectedRow(number, f"cost {raw_cost!r} is not a decimal amount", text)
        if not cost.is_finite() or cost < 0:
            return RejectedRow(number, f"cost {raw_cost!r} must be a non-negative amount", text)
    return CallRecord(number, cli, dialled, start, int(raw_duration), cost)
