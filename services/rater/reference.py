"""Rating's reference data in the database: tariffs, schedules, rate sheets, customers and CLIs.

Every change is logged (``cdrflow.reference.record_change``), so the data is versioned
and the rater knows when to reload its plan and re-rate calls in reconciliation. A rate
sheet is validated before it is stored; a sheet with problems is refused whole and the
active version stays active. ``load_plan`` compiles the whole lot for the engine.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cdrflow.db.models import Customer, CustomerCli, PeakSchedule, RateSheetVersion
from cdrflow.db.models import Tariff as TariffRow
from cdrflow.errors import InputError
from cdrflow.filestore import FileStore
from cdrflow.reference import ReferenceDataError, csv_rows, record_change
from services.rater.clis import CliEntry, parse_cli
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
    """Add a CLI; a DDI another customer already holds (same carrier, overlapping dates) or a
    range overlapping another range is refused, so a call can never match two customers."""
    if session.get(Customer, customer) is None:
        raise InputError(f"no customer {customer!r}")
    entry = parse_cli(customer, text, kind, carrier=carrier, effective_from=effective_from,
                      effective_to=effective_to)
    for other in session.scalars(select(CustomerCli).where(CustomerCli.kind == entry.kind)):
        if (other.carrier or None) != (entry.carrier or None):
            continue
        if entry.kind == "range":
            lo, hi = entry.bounds  # type: ignore[misc]
            olo, ohi = (int(x) for x in other.value.split("-"))
            clash = lo <= ohi and olo <= hi
        else:
            clash = other.value == entry.value
        if clash and _dates_overlap(other, entry):
            if other.customer_code == customer and other.value == entry.value:
                return other  # already there: adding it again changes nothing
            raise InputError(f"CLI {text} overlaps {other.kind} {other.value} of customer {other.customer_code}")
    row = CustomerCli(customer_code=customer, kind=entry.kind, value=entry.value, carrier=entry.carrier,
                      effective_from=entry.effective_from, effective_to=entry.effective_to)
    session.add(row)
    record_change(session, "cli", f"{customer}/{entry.value}", "added", entry.kind)
    return row


def _dates_overlap(a: CustomerCli, b: CliEntry) -> bool:
    a_from, a_to = a.effective_from or date.min, a.effective_to or date.max
    b_from, b_to = b.effective_from or date.min, b.effective_to or date.max
    return a_from < b_to and b_from < a_to


def load_customers(session: Session, path: Path) -> int:
    """CSV ``customer,name,tariff,cli[,kind,carrier,effective_from,effective_to]``: one line per
    CLI; customers are created or updated. All lines are checked before anything is saved."""
    rows = csv_rows(path, ("customer", "name", "cli"))
    problems = []
    for number, row in rows:
        try:
            parse_cli(row["customer"], row["cli"], row.get("kind") or None)
            for field in ("effective_from", "effective_to"):
                if row.get(field):
                    date.fromisoformat(row[field])
        except (InputError, ValueError) as exc:
            problems.append(f"line {number}: {exc}")
    if problems:
        raise ReferenceDataError(str(path), problems)
    seen: set[str] = set()
    for _, row in rows:
        if row["customer"] not in seen:
            save_customer(session, row["customer"], row["name"], row.get("tariff") or None,
                          billing_email=row.get("billing_email") or None)
            seen.add(row["customer"])
        session.flush()
        add_cli(session, row["customer"], row["cli"], kind=row.get("kind") or None, carrier=row.get("carrier") or None,
                effective_from=date.fromisoformat(row["effective_from"]) if row.get("effective_from") else None,
                effective_to=date.fromisoformat(row["effective_to"]) if row.get("effective_to") else None)
    return len(seen)


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
    customers = {c.code: c.tariff for c in session.scalars(select(Customer)) if c.tariff}
    clis = [
        CliEntry(c.customer_code, c.kind, c.value, c.carrier, c.effective_from, c.effective_to)
        for c in session.scalars(select(CustomerCli))
    ]
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
                      schedules=schedules, country_code=country_code)


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
