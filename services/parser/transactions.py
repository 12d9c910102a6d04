"""Carrier transactions as columns: what an SDR (fixed-fee) file's rows become.

A carrier transaction is one fixed fee the carrier charged us: a line rental, a connection,
a cease, equipment. ``amount`` is the carrier's charge in integer millionths (negative for a
credit, e.g. a pro-rata refund); ``period_start``/``period_end`` the period it covers
(``period_end`` exclusive, null when the file does not say).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from cdrflow.money import from_micros

TRANSACTION_SCHEMA: dict[str, pl.DataType] = {
    "row": pl.Int64(),  # 1-based line number in the file
    "reference": pl.String(),  # CLI, account or feature code the fee is for
    "description": pl.String(),
    "event_type": pl.String(),  # e.g. Connection, Rental, Cease
    "period_start": pl.Date(),
    "period_end": pl.Date(),  # exclusive
    "effective_date": pl.Date(),
    "quantity": pl.Int64(),
    "amount": pl.Int64(),  # micros
    "pro_rata": pl.Boolean(),  # a part-period (broken part) charge or credit
    "account_code": pl.String(),
}


def conform_transactions(df: pl.DataFrame) -> pl.DataFrame:
    missing = [pl.lit(None, dtype=t).alias(n) for n, t in TRANSACTION_SCHEMA.items() if n not in df.columns]
    if missing:
        df = df.with_columns(missing)
    df = df.with_columns(pl.col("quantity").fill_null(1), pl.col("pro_rata").fill_null(False))
    return df.select([pl.col(n).cast(t) for n, t in TRANSACTION_SCHEMA.items()])


def transactions_to_rows(df: pl.DataFrame) -> list[dict[str, Any]]:
    """Plain dicts (amount as exact Decimal, dates as date) for storing or writing out."""
    out = []
    for rec in conform_transactions(df).iter_rows(named=True):
        rec["amount"] = None if rec["amount"] is None else from_micros(rec["amount"])
        out.append(rec)
    return out
