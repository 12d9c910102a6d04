"""What the console's reference and billing pages show, read only: carriers, customers, tariffs,
sheets, reconciliation, billing runs and invoices as rows for their templates, and money and
validation problems as the pages print them. The routes (``console_billing``) render these."""

from __future__ import annotations

import re
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cdrflow.db.models import (
    BillingRun,
    Carrier,
    CarrierFormat,
    Customer,
    CustomerCli,
    FeeSheetVersion,
    Invoice,
    PeakSchedule,
    RateSheetVersion,
    ReferenceChange,
    Source,
    Tariff,
)
from cdrflow.money import from_micros
from services.admin.calls_api import money_text
from services.admin.delivery_api import delivery_view
from services.admin.invoices_api import invoice_view
from services.invoicer.tax import CURRENCIES, Currency, currency
from services.invoicer.unbilled import DayRange, customer_calls, unbilled_calls, \
    unbilled_charges
from services.rater.fees import fee_sheet_versions
from services.rater.recon import fee_reconciliation, reconciliation
from services.rater.schedule import UK_DEFAULT_RULES
from services.scheduler.charges import list_charges, plain_amount
from services.sender.delivery import deliveries_of


CALLS_PER_PAGE = 100
SHEET_ROWS_SHOWN = 1000
"""A rate sheet's page lists this many of its rows (its row count says how many there are)."""
RUNS_SHOWN = 200
SCHEDULE_HISTORY = 20
_LINE = re.compile(r"^line (\d+): (.*)$", re.DOTALL)

# --- showing money and problems -------------------------------------------------------------------


def money(amount: Decimal | str | None, code: str) -> str:
    """An amount exactly, with its currency's symbol and at least two places: ``£0.3154``, ``-£0.38``."""
    if amount is None or amount == "":
        return ""
    value = Decimal(amount)
    symbol = CURRENCIES[code].symbol if code in CURRENCIES else f"{code} "
    return f"{'-' if value < 0 else ''}{symbol}{plain_amount(abs(value))}"


def minor_money(minor: int, money_: Currency) -> str:
    return money(money_text(minor, money_), money_.code)


def report_lines(problems: list[str]) -> list[tuple[str, str]]:
    """A validation report line by line: ``("2", "peak -1 is negative")`` from ``line 2: peak ...``."""
    lines = []
    for problem in problems:
        found = _LINE.match(problem)
        lines.append((found.group(1), found.group(2)) if found else ("", problem))
    return lines


def _day(d: date | None) -> str:
    return d.isoformat() if d else ""


def _last_day(end: date | None) -> str:
    """An exclusive end as people read it: the last day included."""
    return (end - timedelta(days=1)).isoformat() if end else ""


# --- the pages' queries (read only) ---------------------------------------------------------------


def carrier_rows(session: Session) -> list[dict[str, Any]]:
    sources = dict(session.execute(select(Source.carrier, func.count()).group_by(Source.carrier)).all())
    failing = dict(session.execute(select(Source.carrier, func.count()).where(Source.state == "failing")
                                   .group_by(Source.carrier)).all())
    return [{"code": c.code, "name": c.name, "format": c.file_format, "sources": sources.get(c.code, 0),
             "failing": failing.get(c.code, 0), "hold_same_name": c.hold_same_name,
             "sdr_for_billing": c.sdr_for_billing}
            for c in session.scalars(select(Carrier).order_by(Carrier.code))]


def mail_addresses(code: str, domain: str, has_pattern: bool) -> list[tuple[str, str]]:
    """The addresses this carrier's files may be mailed to (``services.mailgate.addresses``)."""
    c = code.lower()
    found = [(f"{c}.cdrs@{domain}", "CDR files; monthly if the file name says \"month\", else daily"),
             (f"{c}.daily@{domain}", "daily CDR files"), (f"{c}.monthly@{domain}", "monthly CDR files"),
             (f"{c}.sdr@{domain}", "fixed-fee (SDR) files, monthly")]
    if has_pattern:
        found.append((f"cdrs@{domain}", "any carrier's CDR files: this carrier's are found by the file-name pattern"))
    return found


def carrier_page(session: Session, carrier: Carrier, mail_domain: str) -> dict[str, Any]:
    settings = {s.kind: s for s in session.scalars(select(CarrierFormat).where(CarrierFormat.carrier == carrier.code))}
    formats = []
    for kind in ("cdr", "sdr"):
        s = settings.get(kind)
        name = s.format if s else (carrier.file_format if kind == "cdr" else None)
        formats.append({"kind": kind.upper(), "format": name or "none set",
                        "origin": "formats use" if s else ("the carrier's format" if name else ""),
                        "zone": s.zone if s and s.zone else "", "max_reject_share":
                            "" if s is None or s.max_reject_share is None else f"{s.max_reject_share:g}"})
    sources = list(session.scalars(select(Source).where(Source.carrier == carrier.code).order_by(Source.name)))
    return {"carrier": carrier, "formats": formats, "sources": sources,
            "addresses": mail_addresses(carrier.code, mail_domain, bool(carrier.file_name_pattern))}


def customer_rows(session: Session, zone: Any) -> list[dict[str, Any]]:
    clis = dict(session.execute(select(CustomerCli.customer_code, func.count()).group_by(CustomerCli.customer_code))
                .all())
    rows = []
    for c in session.scalars(select(Customer).order_by(Customer.code)):
        money_ = currency(c.currency)
        unbilled = unbilled_calls(session, c.code, DayRange(), zone)
        rows.append({"code": c.code, "name": c.name, "tariff": c.tariff or "", "schedule": c.billing_schedule,
                     "email": c.billing_email or "", "tax": c.tax_code, "clis": clis.get(c.code, 0),
                     "unbilled_calls": unbilled.calls, "unbilled": minor_money(unbilled.charge_minor(money_), money_)})
    return rows


def customer_page(session: Session, code: str, zone: Any, days: DayRange, unbilled_only: bool,
                  offset: int) -> dict[str, Any]:
    """Everything the customer's page shows; ``unbilled`` (over every day) is shown first."""
    page = customer_calls(session, code, zone, days=days, unbilled_only=unbilled_only, limit=CALLS_PER_PAGE,
                          offset=offset)
    customer, money_ = page.customer, currency(page.customer.currency)
    all_calls = unbilled_calls(session, code, DayRange(), zone)
    charges = unbilled_charges(session, code, datetime.now(UTC), zone)
    calls_minor = all_calls.charge_minor(money_)
    invoices = list(session.scalars(select(Invoice).where(Invoice.customer == code, Invoice.number.is_not(None))
                                    .order_by(Invoice.id.desc())))
    return {
        "customer": customer, "clis": sorted(customer.clis, key=lambda c: (c.kind, c.value)),
        "unbilled": {"calls": all_calls.calls, "calls_amount": minor_money(calls_minor, money_),
                     "in_unrated_files": all_calls.in_unrated_files,
                     "charges": len(charges.items), "charges_amount": minor_money(charges.total_minor, money_),
                     "total": minor_money(calls_minor + charges.total_minor, money_),
                     "next_period": charges.next_period.label},
        "shown": {"calls": page.unbilled.calls, "amount": minor_money(page.unbilled.charge_minor(money_), money_)},
        "calls": [{"start": c.start, "cli": c.cli, "dialled": c.dialled, "destination": c.destination or "",
                   "band": c.band or "", "duration": c.duration, "billable": "" if c.billable_seconds is None
                   else c.billable_seconds, "charge": money(c.charge, money_.code), "status": c.status,
                   "set_aside": c.set_aside, "invoice": c.invoice_number} for c in page.calls],
        "matched": page.matched, "offset": offset,
        "unbilled_items": [{"kind": i.kind, "description": i.description, "quantity": i.quantity,
                            "amount": minor_money(i.amount_minor, money_), "next_run": i.next_run}
                           for i in charges.items],
        "charges": [{"id": c.id, "description": c.description, "amount": money(plain_amount(c.amount), money_.code),
                     "quantity": c.quantity, "frequency": c.frequency, "start": _day(c.start),
                     "end": _last_day(c.end), "billed_until": _day(c.billed_until),
                     "tax": c.tax_code or customer.tax_code} for c in list_charges(session, code)],
        "invoices": [invoice_row(i) for i in invoices],
    }


def invoice_row(i: Invoice) -> dict[str, Any]:
    return {"number": i.number, "customer": i.customer, "period": f"{i.period_start} to {_last_day(i.period_end)}",
            "issued_at": i.issued_at, "status": i.status, "net": money(i.net, i.currency),
            "tax": money(i.tax, i.currency), "total": money(i.total, i.currency)}


def tariff_rows(session: Session) -> list[dict[str, Any]]:
    customers = dict(session.execute(select(Customer.tariff, func.count()).group_by(Customer.tariff)).all())
    sheets = dict(session.execute(select(RateSheetVersion.owner, func.count(func.distinct(
        RateSheetVersion.direction + "/" + RateSheetVersion.carrier))).where(RateSheetVersion.kind == "retail")
        .group_by(RateSheetVersion.owner)).all())
    fees = dict(session.execute(select(FeeSheetVersion.tariff, func.max(FeeSheetVersion.version))
                                .group_by(FeeSheetVersion.tariff)).all())
    return [{"tariff": t, "customers": customers.get(t.code, 0), "rate_sheets": sheets.get(t.code, 0),
             "fee_sheet": fees.get(t.code)} for t in session.scalars(select(Tariff).order_by(Tariff.code))]


def rate_sheet_rows(session: Session, kind: str | None = None, owner: str | None = None) -> list[dict[str, Any]]:
    """Every version, newest first, with ``active`` on the newest of each sheet."""
    stmt = select(RateSheetVersion).order_by(RateSheetVersion.kind, RateSheetVersion.owner,
                                             RateSheetVersion.direction, RateSheetVersion.carrier,
                                             RateSheetVersion.version.desc())
    if kind:
        stmt = stmt.where(RateSheetVersion.kind == kind)
    if owner:
        stmt = stmt.where(RateSheetVersion.owner == owner)
    rows, seen = [], set()
    for v in session.scalars(stmt):
        sheet = (v.kind, v.owner, v.direction, v.carrier)
        rows.append({"version": v, "active": sheet not in seen})
        seen.add(sheet)
    return rows


def fee_sheet_rows(session: Session, tariff: str | None = None) -> list[dict[str, Any]]:
    versions = fee_sheet_versions(session, tariff)
    newest = {v.tariff: v.version for v in versions}
    return [{"version": v, "active": newest[v.tariff] == v.version} for v in reversed(versions)]


def deck_rows(deck: Any) -> list[dict[str, Any]]:
    """A rate sheet's validated rows as the page lists them; money in the sheet's units, exact."""
    money_columns = ("peak", "offpeak", "weekend", "peak_setup", "offpeak_setup", "weekend_setup", "minimum")
    rows = []
    for r in deck.head(SHEET_ROWS_SHOWN).iter_rows(named=True):
        rows.append({"line": r["line"], "code": r["code"], "match": "prefix" if r["is_prefix"] else "charge code",
                     "destination": r["destination"] or "",
                     **{c: "" if r[c] is None else plain_amount(from_micros(r[c])) for c in money_columns},
                     "increments": f"{r['initial']}/{r['subsequent']}", "effective_from": _day(r["effective_from"])})
    return rows


def schedule_rows(session: Session) -> list[dict[str, Any]]:
    history: dict[str, list[ReferenceChange]] = {}
    for change in session.scalars(select(ReferenceChange).where(ReferenceChange.entity == "schedule")
                                  .order_by(ReferenceChange.id.desc())):
        history.setdefault(change.key, []).append(change)
    used = dict(session.execute(select(Tariff.schedule, func.count()).group_by(Tariff.schedule)).all())
    rows = [{"name": "uk-default", "rules": UK_DEFAULT_RULES.strip(), "built_in": True, "holidays": "",
             "tariffs": used.get("uk-default", 0), "history": []}]
    rows += [{"name": s.name, "rules": s.rules.strip(), "built_in": False,
              "holidays": f"as weekend ({s.holiday_region})" if s.holidays_as_weekend else "as their weekday",
              "tariffs": used.get(s.name, 0), "history": history.get(s.name, [])[:SCHEDULE_HISTORY]}
             for s in session.scalars(select(PeakSchedule).order_by(PeakSchedule.name))]
    return rows


def recon_page(session: Session) -> dict[str, Any]:
    """The reconciliation groups, each with its carrier cost as exact text and its minutes."""
    groups = [asdict(g) | {"cost": plain_amount(g.cost), "minutes": f"{g.seconds / 60:.1f}"}
              for g in reconciliation(session)]
    return {"unmatched": [g for g in groups if g["status"] == "unmatched"],
            "unrated": [g for g in groups if g["status"] == "unrated"],
            "fees": [asdict(f) | {"cost": plain_amount(f.cost)} for f in fee_reconciliation(session)],
            "customers": list(session.execute(select(Customer.code, Customer.name).order_by(Customer.code)).all())}


def run_rows(session: Session, customer: str | None) -> list[dict[str, Any]]:
    stmt = select(BillingRun, Invoice.number, Invoice.total, Invoice.currency) \
        .outerjoin(Invoice, Invoice.run_id == BillingRun.id) \
        .order_by(BillingRun.closed_at.desc(), BillingRun.id).limit(RUNS_SHOWN)
    if customer:
        stmt = stmt.where(BillingRun.customer == customer)
    return [{"run": run, "period": f"{run.period_start} to {_last_day(run.period_end)}", "invoice": number,
             "total": money(total, code or "GBP") if number else ""}
            for run, number, total, code in session.execute(stmt)]


def invoice_page(session: Session, invoice: Invoice) -> dict[str, Any]:
    view = invoice_view(session, invoice)
    code = invoice.currency
    for line in view["lines"]:
        line["amount"] = money(line["amount"], code)
        line["covered"] = (f"{line['covered_from']} to {_last_day(date.fromisoformat(line['covered_to']))}"
                           if line["covered_from"] and line["covered_to"] else "")
    note = view["credit_note"]
    if note:
        note["total"] = money(note["total"], code)
    return {"invoice": view, "net": money(view["net"], code), "tax": money(view["tax"], code),
            "total": money(view["total"], code), "period": f"{invoice.period_start} to {_last_day(invoice.period_end)}",
            "deliveries": [delivery_view(d) for d in deliveries_of(session, invoice.number or "")],
            "creditable": invoice.status == "issued" and note is None,
            "billing_email": session.scalar(select(Customer.billing_email).where(Customer.code == invoice.customer))}
