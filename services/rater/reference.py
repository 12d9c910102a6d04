"""Rating's reference data in the database: tariffs, schedules, rate sheets, customers and CLIs.

Every change is logged (``cdrflow.reference.record_change``), so the data is versioned
and the rater knows when to reload its plan and re-rate calls in reconciliation. A rate
sheet is validated before it is stored; a sheet with problems is refused whole and the
active version stays active. ``load_plan`` compiles the whole lot for the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from cdrflow.db.models import Customer, CustomerCli, PeakSchedule, RateSheetVersion
from cdrflow.db.models import Tariff as TariffRow
from cdrflow.errors import InputError
from cdrflow.filestore import FileStore
from cdrflow.reference import ReferenceDataError, csv_columns, csv_rows, insert_columns, record_change
from services.rater.cli_nesting import nested_claims
from services.rater.clis import ENTRY_SCHEMA, Claim, CliClaims, CliEntry, check_claims, parse_cli, read_clis
from services.rater.plan import RETAIL, WHOLESALE, RatingPlan, SheetKey, Tariff
from services.rater.ratesheet import read_rate_sheet
from services.rater.schedule import Schedule

DIRECTIONS = ("outbound", "inbound")


def save_tariff(session: Session, tariff: Tariff, name: str | None = None) -> None:
    if tariff.schedule != "uk-default" and session.get(PeakSchedule, tariff.schedule) is None:
        raise InputError(f"tariff {tariff.code}: no schedule named {tariff.schedule!r}")
    row = session.get(TariffRow, tariff.code)
    action = "changed" if row else "added"
    row = row or TariffRow(code=tariff.code, name=name or tariff.code)
    row.name = name or row.name
    row.schedule, row.split_bands, row.places = tariff.schedule, tariff.split_bands, tariff.places
    row.rounding, row.charge_unanswered = tariff.rounding, tariff.charge_unanswered
    session.add(row)
    record_change(session, "tariff", tariff.code, action, repr(tariff))


def save_schedule(session: Session, name: str, rules_csv: str, *, holidays_as_weekend: bool = False,
                  holiday_region: str = "GB-ENG") -> Schedule:
    """Validate (every minute of the week covered once) before saving."""
    schedule = Schedule.from_rules(name, rules_csv, holidays_as_weekend=holidays_as_weekend,
                                   holiday_region=holiday_region)
    row = session.get(PeakSchedule, name) or PeakSchedule(name=name)
    row.rules, row.holidays_as_weekend, row.holiday_region = rules_csv, holidays_as_weekend, holiday_region
    session.add(row)
    record_change(session, "schedule", name, "loaded")
    return schedule


def load_rate_sheet(session: Session, store: FileStore, content: bytes, *, source_name: str, kind: str, owner: str,
                    direction: str, carrier: str = "") -> RateSheetVersion:
    """Validate a sheet and make it the active version; raises RateSheetError (with line
    numbers) and changes nothing if the sheet has any problem."""
    if kind not in (RETAIL, WHOLESALE) or direction not in DIRECTIONS:
        raise InputError(f"a rate sheet is retail or wholesale, outbound or inbound (got {kind}, {direction})")
    if kind == RETAIL and session.get(TariffRow, owner) is None:
        raise InputError(f"no tariff {owner!r}: add it first with 'cdrflow tariffs add'")
    sheet = read_rate_sheet(content, source_name)
    stored = store.put_bytes(content)
    latest = session.scalar(select(func.max(RateSheetVersion.version)).where(
        RateSheetVersion.kind == kind, RateSheetVersion.owner == owner, RateSheetVersion.direction == direction,
        RateSheetVersion.carrier == carrier)) or 0
    version = RateSheetVersion(kind=kind, owner=owner, direction=direction, carrier=carrier, version=latest + 1,
                               fingerprint=stored.fingerprint, source_name=source_name, rows=len(sheet),
                               loaded_at=datetime.now(UTC))
    session.add(version)
    record_change(session, "rate_sheet", f"{kind}/{owner}/{direction}/{carrier or '*'}", "loaded",
                  f"version {version.version}: {len(sheet)} rates from {source_name}")
    return version


def save_customer(session: Session, code: str, name: str, tariff: str | None, *, billing_email: str | None = None,
                  billing_schedule: str = "monthly") -> Customer:
    if tariff is not None and session.get(TariffRow, tariff) is None:
        raise InputError(f"customer {code}: no tariff {tariff!r}")
    customer = session.get(Customer, code)
    action = "changed" if customer else "added"
    customer = customer or Customer(code=code)
    customer.name, customer.tariff = name, tariff
    customer.billing_email, customer.billing_schedule = billing_email, billing_schedule
    session.add(customer)
    record_change(session, "customer", code, action, f"{name}, tariff {tariff}")
    return customer


def add_cli(session: Session, customer: str, text: str, *, kind: str | None = None, carrier: str | None = None,
            effective_from: date | None = None, effective_to: date | None = None) -> CustomerCli:
    """``add_cli_with_warnings``'s CLI, for callers that show no warnings."""
    return add_cli_with_warnings(session, customer, text, kind=kind, carrier=carrier, effective_from=effective_from,
                                 effective_to=effective_to).row


@dataclass(frozen=True)
class CliAdded:
    """A CLI stored (or held already), and what the operator should know about it: each other
    customer's wider CLI it lies inside, or narrower one it holds (``nested_claims``)."""

    row: CustomerCli
    warnings: tuple[str, ...] = ()


def add_cli_with_warnings(session: Session, customer: str, text: str, *, kind: str | None = None,
                          carrier: str | None = None, effective_from: date | None = None,
                          effective_to: date | None = None) -> CliAdded:
    """Add a CLI; one that would let a call match two customers with neither more specific (a
    DDI another customer holds, same carrier and overlapping dates; a range overlapping another
    range without one holding the other) is refused. A CLI inside another customer's wider one
    (or holding a narrower one) is added, with a warning naming that CLI and its customer."""
    if session.get(Customer, customer) is None:
        raise InputError(f"no customer {customer!r}")
    entry = parse_cli(customer, text, kind, carrier=carrier, effective_from=effective_from,
                      effective_to=effective_to)
    # Only the CLIs that could clash are read: the same value of the kind, or every range.
    same = CustomerCli.kind == entry.kind
    candidates = session.scalars(select(CustomerCli).where(same if entry.kind == "range" else
                                                           same & (CustomerCli.value == entry.value))
                                 .order_by(CustomerCli.id)).all()
    held = [Claim(_entry_of(row)) for row in candidates]
    repeated = CliClaims(held).check(entry, text)
    if repeated is not None:
        return CliAdded(candidates[next(n for n, claim in enumerate(held) if claim is repeated)])
    session.flush()  # the CLIs added before this one in the session are among those it is checked against
    new = pl.DataFrame([tuple(getattr(entry, n) for n in ENTRY_SCHEMA)], schema=ENTRY_SCHEMA, orient="row") \
        .with_columns(line=pl.lit(None, pl.UInt32), cli=pl.lit(text))
    warnings = tuple(message for _, message in nested_claims(new, _cli_table(session)))
    row = CustomerCli(customer_code=customer, kind=entry.kind, value=entry.value, carrier=entry.carrier,
                      effective_from=entry.effective_from, effective_to=entry.effective_to)
    session.add(row)
    record_change(session, "cli", f"{customer}/{entry.value}", "added", entry.kind)
    return CliAdded(row, warnings)


def _entry_of(row: CustomerCli) -> CliEntry:
    return CliEntry(row.customer_code, row.kind, row.value, row.carrier, row.effective_from, row.effective_to)


@dataclass(frozen=True)
class CustomersLoaded:
    """What one customers file changed."""

    customers: int  # in the file
    customers_added: int
    customers_changed: int
    clis_added: int
    clis_held: int  # lines whose customer holds that CLI already: loading them again changes nothing
    warnings: tuple[str, ...] = ()
    """"line N: …" for each new CLI inside another customer's wider one, or holding a narrower one
    (``nested_claims``): loaded, and the most specific wins; not part of ``str()``."""

    def __str__(self) -> str:
        return (f"{self.customers} customer(s): {self.customers_added} new, {self.customers_changed} changed; "
                f"{self.clis_added} CLI(s) added, {self.clis_held} already held")


def load_customers(session: Session, path: Path) -> CustomersLoaded:
    """``load_customers_csv`` of a file on disk."""
    return load_customers_csv(session, path.read_bytes(), source=str(path))


def load_customers_csv(session: Session, content: bytes, *, source: str, country_code: str = "44") -> CustomersLoaded:
    """CSV ``customer,name,tariff,cli[,kind,carrier,effective_from,effective_to,billing_email]``:
    one line per CLI; customers are created or updated (name and tariff from a customer's first
    line; its billing email only if the file has that column).

    All or nothing: every line is checked first, in memory, and any problem refuses the whole
    file (ReferenceDataError, every problem with its line number). The checks are those of
    ``add_cli``, against the stored CLIs (read once) and the file's earlier lines. Then the
    customers and CLIs are written in bulk and the change is logged once, so the reference
    version moves once per load (not at all if the file changes nothing)."""
    lines, columns = csv_columns(content, source, ("customer", "name", "cli"))
    blank = [""] * len(lines)
    rows = pl.DataFrame({"line": pl.Series(lines, dtype=pl.UInt32)} | {
        name: pl.Series(columns.get(name, blank), dtype=pl.String)
        for name in ("customer", "name", "tariff", "cli", "kind", "carrier", "effective_from", "effective_to",
                     "billing_email")})
    problems = [(line, "customer is empty") for line in rows.filter(pl.col("customer") == "")["line"]]
    rows = rows.filter(pl.col("customer") != "")

    session.flush()  # the caller's pending changes (a tariff just added) are visible to the reads below
    tariffs = set(session.scalars(select(TariffRow.code)))
    stored = {code: (name, tariff, email) for code, name, tariff, email in session.execute(
        select(Customer.code, Customer.name, Customer.tariff, Customer.billing_email))}
    customers: dict[str, tuple[str, str | None, str | None]] = {}
    for line, code, name, tariff, email in rows.unique("customer", keep="first", maintain_order=True).select(
            "line", "customer", "name", "tariff", "billing_email").iter_rows():
        if tariff and tariff not in tariffs:
            problems.append((line, f"customer {code}: no tariff {tariff!r}"))
        if "billing_email" not in columns:
            email = stored[code][2] if code in stored else None
        customers[code] = (name, tariff or None, email or None)

    entries, bad = read_clis(rows, country_code)
    stored_clis = _cli_table(session)
    new, held, clashes = check_claims(entries, stored_clis)
    problems += bad + clashes
    if problems:
        raise ReferenceDataError(source, [f"line {line}: {message}" for line, message in sorted(problems)])

    warnings = tuple(f"line {line}: {message}" for line, message in nested_claims(entries.filter(new), stored_clis))
    added = [code for code in customers if code not in stored]
    changed = [{"_code": code, "name": name, "tariff": tariff, "billing_email": email}
               for code, (name, tariff, email) in customers.items()
               if code in stored and stored[code] != (name, tariff, email)]
    clis = entries.filter(new).select(
        pl.col("customer").alias("customer_code"), "kind", "value", "carrier", "effective_from", "effective_to")
    # Customers first: a CLI's customer must exist (a foreign key). Core statements, not an ORM
    # object per row; a customer the session holds already is refreshed when next read.
    insert_columns(session, Customer.__table__, {
        "code": added, **{column: [customers[code][n] for code in added]
                          for n, column in enumerate(("name", "tariff", "billing_email"))},
        "billing_schedule": ["monthly"] * len(added)})
    if changed:
        session.execute(update(Customer.__table__).where(Customer.__table__.c.code == bindparam("_code")), changed)
    insert_columns(session, CustomerCli.__table__, clis.to_dict(as_series=False))
    for held_customer in [o for o in session.identity_map.values() if isinstance(o, Customer)]:
        if held_customer.code in customers:
            session.expire(held_customer, ["name", "tariff", "billing_email", "clis"])
    loaded = CustomersLoaded(len(customers), len(added), len(changed), clis.height, held, warnings)
    if added or changed or clis.height:
        record_change(session, "customer", source.rsplit("/", 1)[-1][:200], "loaded", str(loaded))
    return loaded


def _cli_table(session: Session) -> pl.DataFrame:
    """Every stored CLI in ``ENTRY_SCHEMA``, in the order added: a column table read through
    Core rows, not an ORM object per CLI (a reseller has tens of thousands)."""
    c = CustomerCli.__table__.c
    rows = session.execute(select(c.customer_code, c.kind, c.value, c.carrier, c.effective_from, c.effective_to)
                           .order_by(c.id)).all()
    return pl.DataFrame(rows, schema=ENTRY_SCHEMA, orient="row")


def load_plan(session: Session, store: FileStore, zone: ZoneInfo, country_code: str = "44") -> RatingPlan:
    """Everything the engine needs, from the database and the store (active sheet versions)."""
    schedules = {
        s.name: Schedule.from_rules(s.name, s.rules, holidays_as_weekend=s.holidays_as_weekend,
                                    holiday_region=s.holiday_region)
        for s in session.scalars(select(PeakSchedule))
    }
    tariffs = {
        t.code: Tariff(t.code, t.schedule, t.split_bands, t.places, t.rounding, t.charge_unanswered)
        for t in session.scalars(select(TariffRow))
    }
    rows = session.execute(select(Customer.code, Customer.tariff, Customer.currency)).all()
    customers = {code: tariff for code, tariff, _ in rows if tariff}
    currencies = {code: currency for code, _, currency in rows}  # every customer's, tariff or not
    clis = _cli_table(session)
    newest = select(RateSheetVersion.kind, RateSheetVersion.owner, RateSheetVersion.direction,
                    RateSheetVersion.carrier, func.max(RateSheetVersion.version).label("version")) \
        .group_by(RateSheetVersion.kind, RateSheetVersion.owner, RateSheetVersion.direction, RateSheetVersion.carrier) \
        .subquery()
    active = session.scalars(select(RateSheetVersion).join(newest, (RateSheetVersion.kind == newest.c.kind)
                                                           & (RateSheetVersion.owner == newest.c.owner)
                                                           & (RateSheetVersion.direction == newest.c.direction)
                                                           & (RateSheetVersion.carrier == newest.c.carrier)
                                                           & (RateSheetVersion.version == newest.c.version)))
    sheets = {
        SheetKey(v.kind, v.owner, v.direction, v.carrier): read_rate_sheet(store.read_bytes(v.fingerprint), v.source_name)
        for v in active
    }
    return RatingPlan(zone=zone, tariffs=tariffs, customers=customers, clis=clis, sheets=sheets,
                      schedules=schedules, country_code=country_code, currencies=currencies)


def load_tariffs(session: Session, path: Path) -> int:
    """CSV ``tariff,name[,schedule,split_bands,places,rounding,charge_unanswered]``."""
    rows = csv_rows(path, ("tariff", "name"))
    tariffs, problems = [], []
    for number, row in rows:
        try:
            tariffs.append((Tariff(
                row["tariff"], row.get("schedule") or "uk-default", _flag(row.get("split_bands")),
                int(row.get("places") or 4), row.get("rounding") or "half-up", _flag(row.get("charge_unanswered")),
            ), row["name"]))
        except ValueError as exc:
            problems.append(f"line {number}: {exc}")
    if problems:
        raise ReferenceDataError(str(path), problems)
    for tariff, name in tariffs:
        save_tariff(session, tariff, name)
    return len(tariffs)


def _flag(text: str | None) -> bool:
    value = (text or "false").strip().lower()
    if value not in ("true", "false", "yes", "no", "1", "0"):
        raise ValueError(f"{text!r} is not true or false")
    return value in ("true", "yes", "1")
