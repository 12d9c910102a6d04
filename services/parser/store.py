"""Storing an SDR file's carrier transactions: keyed by (file, row), so a repeat after a crash
stores nothing twice."""

from __future__ import annotations

import polars as pl
from sqlalchemy.orm import Session

from cdrflow.db.models import CarrierTransaction, File
from cdrflow.db.upsert import insert_new
from services.parser.transactions import transactions_to_rows


def store_transactions(session: Session, file: File, transactions: pl.DataFrame) -> int:
    """Insert the file's carrier transactions not stored yet; returns how many were new."""
    rows = [rec | {"file_id": file.id, "carrier": file.carrier} for rec in transactions_to_rows(transactions)]
    return insert_new(session, CarrierTransaction.__table__, rows, ("file_id", "row"))
