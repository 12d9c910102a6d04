"""Idempotent bulk inserts: a row whose unique key exists already is skipped, not an error."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert_new(session: Session, table: Table, rows: Sequence[dict[str, Any]], key: Sequence[str]) -> int:
    """Insert ``rows``, skipping those whose ``key`` columns match an existing row. Returns rows inserted."""
    # RETURNING counts the rows really inserted: executemany's rowcount is not reliable on every driver
    return len(insert_new_returning(session, table, rows, key, table.c[key[0]]))


def insert_new_returning(session: Session, table: Table, rows: Sequence[dict[str, Any]], key: Sequence[str],
                         column: Any) -> list[Any]:
    """``insert_new``, returning ``column`` of each row really inserted."""
    if not rows:
        return []
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    stmt = module.insert(table).on_conflict_do_nothing(index_elements=list(key)).returning(column)
    return list(session.scalars(stmt, list(rows)).all())
