"""Normalised call records as columns: the contract between parsers and the rating engine.

Parsers stream a file into batches of these columns (plus row rejections); the rating
engine prices a whole batch at once. On the bus, a batch travels as columns too
(``cdrflow.batches``: one JSON list per column, times and money as integers).

Units: ``start`` and ``end`` are UTC instants (microseconds); ``duration`` is the billable
(answered) duration in whole seconds as the switch reported it; ``cost`` is the carrier's
own wholesale cost in integer millionths of the currency unit (exact), or null: in the carrier's
billing currency as the CDR states it (cdrflow keeps no carrier currency yet). A rated call's
``charge`` is in its customer's currency, which the call says (``currency``, ISO 4217).
"""

from __future__ import annotations

import polars as pl

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

RATED_SCHEMA: dict[str, pl.DataType] = {
    "customer": pl.String(), "tariff": pl.String(), "code": pl.String(), "destination": pl.String(),
    "band": pl.String(),  # peak | offpeak | weekend, when rated
    "billable_seconds": pl.Int64(),
    "charge": pl.Int64(),  # retail price in micros, when rated
    "cost": pl.Int64(),  # wholesale cost in micros: the CDR's own, else the wholesale sheet's
    "cdr_cost": pl.Int64(),  # the carrier's cost as its CDR gave it, in micros (kept for re-rating)
    "currency": pl.String(),  # ISO 4217 code of ``charge``: the customer's currency; null when no customer
    "status": pl.String(),  # rated | unmatched | unrated
    "reason": pl.String(),  # why not rated
}
"""What the rating engine adds to a call record."""
CALL_SCHEMA: dict[str, pl.DataType] = {n: t for n, t in RECORD_SCHEMA.items() if n != "cost"} | RATED_SCHEMA
"""A rated call as the engine gives it and call-rated carries it (``cost`` is the rated one)."""


def empty_records() -> pl.DataFrame:
    return pl.DataFrame(schema=RECORD_SCHEMA)


def conform(df: pl.DataFrame) -> pl.DataFrame:
    """Add any missing optional column as nulls and put columns in schema order and types."""
    missing = [pl.lit(None, dtype=t).alias(n) for n, t in RECORD_SCHEMA.items() if n not in df.columns]
    if missing:
        df = df.with_columns(missing)
    return df.select([pl.col(n).cast(t) for n, t in RECORD_SCHEMA.items()])
