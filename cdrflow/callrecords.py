"""Normalised call records as columns: the contract between parsers and the rating engine.

Parsers stream a file into batches of these columns (plus row rejections); the rating
engine prices a whole batch at once. On the bus, a batch travels as a list of JSON objects
(``records_to_event`` / ``records_from_event``), one per call, with the same field names.

Units: ``start`` and ``end`` are UTC instants (microseconds); ``duration`` is the billable
(answered) duration in whole seconds as the switch reported it; ``cost`` is the carrier's
own wholesale cost in integer millionths of the currency unit (exact), or null.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import polars as pl

from cdrflow.money import from_micros, to_micros

RECORD_SCHEMA: dict[str, pl.DataType] = {
    "row": pl.Int64(),  # 1-based line number in the file
    "cli": pl.String(),  # calling number as the carrier wrote it
    "dialled": pl.String(),  # called number as the carrier wrote it
    "start": pl.Datetime("us", "UTC"),
    "end": pl.Datetime("us", "UTC"),  # null when the format has none
    "duration": pl.Int64(),  # billable seconds reported by the switch
    "answered": pl.Boolean(),
    "charge_code": pl.String(),  # the carrier's charge code, when its CDR has one
    "cost": pl.Int64(),  # carrier cost in micros, when its CDR has one
    "account_code": pl.String(),
    "direction": pl.String(),  # outbound | inbound | null (= the file's direction)
}
RECORD_FIELDS = tuple(RECORD_SCHEMA)


def empty_records() -> pl.DataFrame:
    return pl.DataFrame(schema=RECORD_SCHEMA)


def conform(df: pl.DataFrame) -> pl.DataFrame:
    """Add any missing optional column as nulls and put columns in schema order and types."""
    missing = [pl.lit(None, dtype=t).alias(n) for n, t in RECORD_SCHEMA.items() if n not in df.columns]
    if missing:
        df = df.with_columns(missing)
    return df.select([pl.col(n).cast(t) for n, t in RECORD_SCHEMA.items()])


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def records_to_event(df: pl.DataFrame) -> list[dict[str, Any]]:
    """One JSON-ready dict per call; times ISO 8601 with offset, cost as a decimal string."""
    out = []
    for rec in conform(df).iter_rows(named=True):
        rec["start"] = _iso(rec["start"])
        rec["end"] = _iso(rec["end"])
        rec["cost"] = None if rec["cost"] is None else f"{from_micros(rec['cost']).normalize():f}"
        out.append(rec)
    return out


def records_from_event(records: list[dict[str, Any]]) -> pl.DataFrame:
    """The inverse of ``records_to_event``; exact for cost (no float on the way)."""
    if not records:
        return empty_records()
    columns: dict[str, list[Any]] = {name: [] for name in RECORD_FIELDS}
    for rec in records:
        for name in RECORD_FIELDS:
            value = rec.get(name)
            if name in ("start", "end") and value is not None:
                value = datetime.fromisoformat(value).astimezone(UTC)
            elif name == "cost" and value is not None:
                value = to_micros(Decimal(value))
            elif name == "answered" and value is None:
                value = True
            columns[name].append(value)
    return pl.DataFrame(columns, schema=RECORD_SCHEMA)
