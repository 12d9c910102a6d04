"""Reference data every service shares: carriers, and the change log of all reference data.

Customers, tariffs, rate sheets and schedules belong to rating (services/rater/reference.py).
Loaders take plain CSV a person can read and diff; a file with any bad line loads nothing.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cdrflow.db.models import Carrier, ReferenceChange
from cdrflow.errors import InputError


class ReferenceDataError(InputError):
    """A reference-data file has bad lines; nothing from it was loaded."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path, self.problems = path, problems
        super().__init__(f"{path}: {len(problems)} problem(s), nothing loaded:\n  " + "\n  ".join(problems))


def record_change(session: Session, entity: str, key: str, action: str, detail: str | None = None) -> None:
    """Append to the change log; its newest id is the reference data's version."""
    session.add(ReferenceChange(entity=entity, key=key, action=action, detail=detail, changed_at=datetime.now(UTC)))


def reference_version(session: Session) -> int:
    return session.scalar(select(func.max(ReferenceChange.id))) or 0


def csv_rows(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) pairs with lower-cased, trimmed headers; a missing column is refused."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip().lower() for h in reader.fieldnames or []]
        missing = [c for c in required if c not in header]
        if missing:
            raise ReferenceDataError(str(path), [f"line 1: header lacks {', '.join(missing)}"])
        reader.fieldnames = header
        return [(n, {k: (v or "").strip() for k, v in row.items() if k}) for n, row in enumerate(reader, start=2)]


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
