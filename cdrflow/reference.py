"""Reference data every service shares: carriers, and the change log of all reference data.

Customers, tariffs, rate sheets and schedules belong to rating (services/rater/reference.py).
Loaders take plain CSV a person can read and diff; a file with any bad line loads nothing.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Date, Table, func, select, text
from sqlalchemy.orm import Session

from cdrflow.db.models import Carrier, ReferenceChange
from cdrflow.errors import InputError


SHOWN_PROBLEMS = 50
"""A file's message lists this many problems; ``problems`` keeps them all (the API returns them)."""


class ReferenceDataError(InputError):
    """A reference-data file has bad lines; nothing from it was loaded."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path, self.problems = path, problems
        shown = problems[:SHOWN_PROBLEMS]
        more = [f"… and {len(problems) - len(shown)} more"] if len(problems) > len(shown) else []
        super().__init__(f"{path}: {len(problems)} problem(s), nothing loaded:\n  " + "\n  ".join(shown + more))


def record_change(session: Session, entity: str, key: str, action: str, detail: str | None = None) -> None:
    """Append to the change log; its newest id is the reference data's version."""
    session.add(ReferenceChange(entity=entity, key=key, action=action, detail=detail, changed_at=datetime.now(UTC)))


def reference_version(session: Session) -> int:
    return session.scalar(select(func.max(ReferenceChange.id))) or 0


def csv_rows(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) pairs with lower-cased, trimmed headers; a missing column is refused."""
    lines, columns = csv_columns(path.read_bytes(), str(path), required)
    names = list(columns)
    return [(line, dict(zip(names, values, strict=True)))
            for line, *values in zip(lines, *columns.values(), strict=True)]


def csv_columns(content: bytes, source: str, required: tuple[str, ...]) -> tuple[list[int], dict[str, list[str]]]:
    """A CSV file's bytes as columns (for files too big for a dict per row): each row's line
    number, and each column (lower-cased, trimmed header) as trimmed text, "" where a short row
    has none. Blank lines are skipped; a row's number is the line it ends on (its own line, unless
    a quoted field spans lines). A missing ``required`` column is refused."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ReferenceDataError(source, [f"not UTF-8 text (byte {exc.start}): save the file as UTF-8 CSV"]) from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip().lower() for h in next(reader, [])]
    missing = [c for c in required if c not in header]
    if missing:
        raise ReferenceDataError(source, [f"line 1: header lacks {', '.join(missing)}"])
    width, lines, rows = len(header), [], []
    for row in reader:
        if not row:
            continue
        lines.append(reader.line_num)
        rows.append(row if len(row) == width else (row + [""] * width)[:width])
    columns = [[cell.strip() for cell in column] for column in zip(*rows, strict=True)] if rows else [[]] * width
    # A repeated header name keeps its last column, as csv.DictReader does; an empty one is dropped.
    return lines, {name: column for name, column in zip(header, columns, strict=True) if name}


def insert_columns(session: Session, table: Table, columns: Mapping[str, Sequence[Any]]) -> None:
    """Insert rows given as columns of ``table`` (equal lengths) in bulk, the fastest way each
    database takes them, in the session's transaction:

    - PostgreSQL: one ``INSERT … SELECT * FROM unnest(…)`` with one array parameter per column.
      A multi-row ``VALUES`` list would need chunks under the protocol's 65,535 parameters and a
      parse of every placeholder; executemany costs a round trip per row in psycopg's pipeline.
    - SQLite: one prepared statement the driver runs for every row (executemany), each run
      binding one row's values (far under SQLite's 32,766), handed to the driver as they are:
      SQLAlchemy's per-row parameter processing would cost more than the inserts. Dates are
      written as SQLAlchemy's SQLite dialect writes them (ISO ``YYYY-MM-DD``)."""
    names = list(columns)
    if not names or not len(columns[names[0]]):
        return
    dialect = session.get_bind().dialect
    quote = dialect.identifier_preparer.quote
    into = f"INSERT INTO {quote(table.name)} ({', '.join(quote(name) for name in names)})"
    if dialect.name == "postgresql":
        arrays = ", ".join(f"CAST(:p{n} AS {table.c[name].type.compile(dialect)}[])" for n, name in enumerate(names))
        session.execute(text(f"{into} SELECT * FROM unnest({arrays})"),
                        {f"p{n}": list(columns[name]) for n, name in enumerate(names)})
        return
    values = [[None if d is None else d.isoformat() for d in columns[name]]
              if isinstance(table.c[name].type, Date) else columns[name] for name in names]
    session.connection().exec_driver_sql(f"{into} VALUES ({', '.join('?' * len(names))})",
                                         list(zip(*values, strict=True)))


def add_carrier(session: Session, code: str, name: str, file_format: str = "generic-cdr") -> Carrier:
    carrier = session.get(Carrier, code)
    action = "changed" if carrier else "added"
    carrier = carrier or Carrier(code=code)
    carrier.name, carrier.file_format = name, file_format
    session.add(carrier)
    record_change(session, "carrier", code, action, f"{name} ({file_format})")
    return carrier


def load_carriers(session: Session, path: Path) -> int:
    """CSV ``code,name[,file_format]``."""
    rows = csv_rows(path, ("code", "name"))
    for _, row in rows:
        add_carrier(session, row["code"], row["name"], row.get("file_format") or "generic-cdr")
    return len(rows)
