"""Reference data operators load: carriers, customers and their CLIs (foundation: flat rates).

Loaders take plain CSV a person can read and diff; each bad line is reported
with its line number and nothing is loaded from a file that has any.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy.orm import Session

from cdrflow.db.models import Carrier, Customer, CustomerCli
from cdrflow.errors import InputError
from cdrflow.money import MoneyError, to_money
from cdrflow.numbers import normalise_number


class ReferenceDataError(InputError):
    """A reference-data file has bad lines; nothing from it was loaded."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path, self.problems = path, problems
        super().__init__(f"{path}: {len(problems)} problem(s), nothing loaded:\n  " + "\n  ".join(problems))


def add_carrier(session: Session, code: str, name: str, file_format: str = "generic-cdr") -> Carrier:
    carrier = session.get(Carrier, code) or Carrier(code=code)
    carrier.name, carrier.file_format = name, file_format
    session.add(carrier)
    return carrier


def add_customer(session: Session, code: str, name: str, per_minute_rate: str, clis: Iterable[str] = (),
                 billing_email: str | None = None) -> Customer:
    customer = session.get(Customer, code) or Customer(code=code)
    customer.name, customer.per_minute_rate, customer.billing_email = name, to_money(per_minute_rate), billing_email
    session.add(customer)
    for raw in clis:
        cli = normalise_number(raw)
        owner = session.get(CustomerCli, cli)
        if owner is not None and owner.customer_code != code:
            raise InputError(f"CLI {cli} already belongs to customer {owner.customer_code}")
        if owner is None:
            session.add(CustomerCli(cli=cli, customer_code=code))
    return customer


def _rows(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip().lower() for h in reader.fieldnames or []]
        missing = [c for c in required if c not in header]
        if missing:
            raise ReferenceDataError(str(path), [f"line 1: header lacks {', '.join(missing)}"])
        reader.fieldnames = header
        return [(n, {k: (v or "").strip() for k, v in row.items()}) for n, row in enumerate(reader, start=2)]


def load_carriers(session: Session, path: Path) -> int:
    """CSV ``code,name,file_format``."""
    rows = _rows(path, ("code", "name"))
    for _, row in rows:
        add_carrier(session, row["code"], row["name"], row.get("file_format") or "generic-cdr")
    return len(rows)


def load_customers(session: Session, path: Path) -> int:
    """CSV ``customer,name,per_minute_rate,cli`` — one line per CLI; the rate on each line must agree."""
    rows = _rows(path, ("customer", "name", "per_minute_rate", "cli"))
    problems = []
    for number, row in rows:
        try:
            to_money(row["per_minute_rate"])
        except MoneyError as exc:
            problems.append(f"line {number}: per_minute_rate {row['per_minute_rate']!r}: {exc}")
        if not row["cli"]:
            problems.append(f"line {number}: cli is empty")
    if problems:
        raise ReferenceDataError(str(path), problems)
    for _, row in rows:
        add_customer(session, row["customer"], row["name"], row["per_minute_rate"], [row["cli"]])
    return len({row["customer"] for _, row in rows})
