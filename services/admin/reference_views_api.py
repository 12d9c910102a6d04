"""Reference data over HTTP, read only: every carrier, customer, tariff, peak schedule, rate
sheet and CLI an operator set up can be listed and shown (``GET /carriers``, ``/carriers/{code}``,
``/customers/{code}``, ``/tariffs``, ``/tariffs/{code}``, ``/schedules``, ``/schedules/{name}``,
``/rate-sheets``, ``/rate-sheets/{id}``, ``/clis``, ``/clis/{value}``). The changes are made in
``reference_api.py``, ``fees_api.py`` and ``formats_api.py``; ``cdrflow … list|show`` reads here.

Money is decimal text ("0.0125"), never a float; days are ``YYYY-MM-DD``, times ISO 8601 with
their offset. An unknown code is a 404 ``{"error": ...}`` naming the command that lists them.
"""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cdrflow.db.models import (
    Carrier, CarrierFormat, Customer, CustomerCli, PeakSchedule, RateSheetVersion, Source, Tariff,
)
from cdrflow.errors import InputError
from cdrflow.runtime import Runtime
from services.admin.reference_api import customer_view
from services.rater.ratesheet import MONEY_COLUMNS, read_rate_sheet
from services.rater.schedule import UK_DEFAULT_RULES

RATES_SHOWN = 1000
"""Rates a rate sheet's show gives unless asked for more (``?limit=``): a deck can hold 200,000."""
RATES_LIMIT = 100_000
BUILT_IN_SCHEDULE = "uk-default"


def _not_found(what: str, key: str, listed_by: str) -> HTTPException:
    return HTTPException(404, f"no {what} {key!r}: see '{listed_by}'")


def _day(value: Any) -> str | None:
    return value.isoformat() if value else None


# --- carriers ------------------------------------------------------------------------


def carrier_view(carrier: Carrier, settings: list[CarrierFormat]) -> dict[str, Any]:
    """A carrier: the formats that read its CDR and SDR files, and its processing rules."""
    formats = {s.kind: s.format for s in settings}
    return {"carrier": carrier.code, "name": carrier.name, "cdr_format": formats.get("cdr", carrier.file_format),
            "sdr_format": formats.get("sdr"), "hold_same_name": carrier.hold_same_name,
            "sdr": "billing" if carrier.sdr_for_billing else "information",
            "file_name_pattern": carrier.file_name_pattern, "mail_senders": carrier.mail_senders}


def mail_addresses(code: str, domain: str) -> list[str]:
    """The mail gateway's addresses for this carrier's files (services/mailgate/addresses.py)."""
    c = code.lower()
    return [f"{c}.cdrs@{domain}", f"{c}.daily@{domain}", f"{c}.monthly@{domain}", f"{c}.sdr@{domain}"]


# --- tariffs, schedules, rate sheets -----------------------------------------------------


def tariff_view(t: Tariff) -> dict[str, Any]:
    return {"tariff": t.code, "name": t.name, "schedule": t.schedule, "split_bands": t.split_bands,
            "places": t.places, "rounding": t.rounding, "charge_unanswered": t.charge_unanswered}


def schedule_view(name: str, rules_csv: str, holidays_as_weekend: bool, region: str, built_in: bool) -> dict[str, Any]:
    """A peak schedule with its rules as they were saved (band, days, start, end; end exclusive,
    23:59 read as the end of the day)."""
    rules = []
    for number, row in enumerate(csv.reader(io.StringIO(rules_csv)), start=1):
        if len(row) != 4 or (number == 1 and row[0].strip().lower() == "band"):
            continue
        band, days, start, end = (c.strip() for c in row)
        rules.append({"band": band, "days": days, "start": start, "end": end})
    return {"schedule": name, "built_in": built_in, "holidays_as_weekend": holidays_as_weekend,
            "holiday_region": region, "rules": rules}


def _active_versions(session: Session) -> set[int]:
    """The ids of the active rate sheets: the newest version of each (kind, owner, direction, carrier)."""
    newest = select(func.max(RateSheetVersion.id)).group_by(
        RateSheetVersion.kind, RateSheetVersion.owner, RateSheetVersion.direction, RateSheetVersion.carrier)
    return set(session.scalars(newest))


def rate_sheet_view(v: RateSheetVersion, active: set[int]) -> dict[str, Any]:
    return {"id": v.id, "kind": v.kind, "owner": v.owner, "direction": v.direction, "carrier": v.carrier or None,
            "version": v.version, "active": v.id in active, "name": v.source_name, "rows": v.rows,
            "fingerprint": v.fingerprint, "loaded_at": v.loaded_at.isoformat()}


def _money(micros: int | None) -> str | None:
    return None if micros is None else f"{(Decimal(micros).scaleb(-6)).normalize():f}"


def rate_views(content: bytes, name: str, limit: int) -> list[dict[str, Any]]:
    """A stored sheet's rates as validated (money per minute or per call, as decimal text)."""
    deck = read_rate_sheet(content, name).deck.sort("line").head(limit)
    return [{"line": r["line"], "code": r["code"], "destination": r["destination"], "is_prefix": r["is_prefix"],
             **{c: _money(r[c]) for c in MONEY_COLUMNS}, "initial": r["initial"], "subsequent": r["subsequent"],
             "effective_from": _day(r["effective_from"])} for r in deck.iter_rows(named=True)]


def cli_view(c: CustomerCli) -> dict[str, Any]:
    return {"customer": c.customer_code, "kind": c.kind, "value": c.value, "carrier": c.carrier,
            "effective_from": _day(c.effective_from), "effective_to": _day(c.effective_to)}


def _limit(request: Request) -> int:
    text = request.query_params.get("limit", str(RATES_SHOWN))
    if not text.isdigit() or not 1 <= int(text) <= RATES_LIMIT:
        raise InputError(f"limit {text!r} is not a whole number from 1 to {RATES_LIMIT}")
    return int(text)


def reference_view_routes(runtime: Runtime) -> list[Route]:
    database, domain = runtime.database, runtime.settings.mail_domain

    def list_carriers(_: Request) -> Response:
        """Every carrier with the formats that read its files and its processing rules."""
        with database.transaction() as session:
            settings: dict[str, list[CarrierFormat]] = {}
            for s in session.scalars(select(CarrierFormat)):
                settings.setdefault(s.carrier, []).append(s)
            return JSONResponse([carrier_view(c, settings.get(c.code, []))
                                 for c in session.scalars(select(Carrier).order_by(Carrier.code))])

    def show_carrier(request: Request) -> Response:
        """One carrier: formats, rules, the addresses to mail its files to, its collection sources."""
        code = request.path_params["code"]
        with database.transaction() as session:
            carrier = session.get(Carrier, code)
            if carrier is None:
                raise _not_found("carrier", code, "cdrflow carriers list")
            settings = list(session.scalars(select(CarrierFormat).where(CarrierFormat.carrier == code)))
            sources = [{"source": s.name, "protocol": s.protocol, "host": s.host,
                        "state": s.state if s.enabled else "disabled",
                        "last_success_at": s.last_success_at.isoformat() if s.last_success_at else None}
                       for s in session.scalars(select(Source).where(Source.carrier == code).order_by(Source.name))]
            return JSONResponse(carrier_view(carrier, settings) | {"mail_addresses": mail_addresses(code, domain),
                                                                     "sources": sources})

    def show_customer(request: Request) -> Response:
        """One customer: tariff, billing schedule, billing email, tax and CLIs."""
        code = request.path_params["code"]
        with database.transaction() as session:
            customer = session.scalar(select(Customer).options(selectinload(Customer.clis))
                                      .where(Customer.code == code))
            if customer is None:
                raise _not_found("customer", code, "cdrflow customers list")
            return JSONResponse(customer_view(customer))

    def list_tariffs(_: Request) -> Response:
        """Every tariff: its schedule and rounding."""
        with database.transaction() as session:
            return JSONResponse([tariff_view(t) for t in session.scalars(select(Tariff).order_by(Tariff.code))])

    def show_tariff(request: Request) -> Response:
        """One tariff, with its rate sheets (every version, ``active`` on the ones in use) and customers."""
        code = request.path_params["code"]
        with database.transaction() as session:
            tariff = session.get(Tariff, code)
            if tariff is None:
                raise _not_found("tariff", code, "cdrflow tariffs list")
            active = _active_versions(session)
            sheets = session.scalars(select(RateSheetVersion).where(
                RateSheetVersion.kind == "retail", RateSheetVersion.owner == code).order_by(RateSheetVersion.id))
            customers = session.scalars(select(Customer.code).where(Customer.tariff == code).order_by(Customer.code))
            return JSONResponse(tariff_view(tariff) | {"rate_sheets": [rate_sheet_view(v, active) for v in sheets],
                                                       "customers": list(customers)})

    def list_schedules(_: Request) -> Response:
        """Every peak schedule, the built-in uk-default first."""
        with database.transaction() as session:
            saved = [schedule_view(s.name, s.rules, s.holidays_as_weekend, s.holiday_region, False)
                     for s in session.scalars(select(PeakSchedule).order_by(PeakSchedule.name))]
        built_in = [] if any(s["schedule"] == BUILT_IN_SCHEDULE for s in saved) else \
            [schedule_view(BUILT_IN_SCHEDULE, UK_DEFAULT_RULES, False, "GB-ENG", True)]
        return JSONResponse(built_in + saved)

    def show_schedule(request: Request) -> Response:
        """One peak schedule with its rules."""
        name = request.path_params["name"]
        with database.transaction() as session:
            row = session.get(PeakSchedule, name)
            if row is not None:
                return JSONResponse(schedule_view(row.name, row.rules, row.holidays_as_weekend, row.holiday_region,
                                                  False))
        if name == BUILT_IN_SCHEDULE:
            return JSONResponse(schedule_view(BUILT_IN_SCHEDULE, UK_DEFAULT_RULES, False, "GB-ENG", True))
        raise _not_found("schedule", name, "cdrflow schedules list")

    def list_rate_sheets(request: Request) -> Response:
        """Every rate sheet version, oldest first; ``kind``, ``owner`` and ``direction`` filter."""
        q = request.query_params
        stmt = select(RateSheetVersion).order_by(RateSheetVersion.id)
        for key in ("kind", "owner", "direction"):
            if q.get(key):
                stmt = stmt.where(getattr(RateSheetVersion, key) == q[key])
        with database.transaction() as session:
            active = _active_versions(session)
            return JSONResponse([rate_sheet_view(v, active) for v in session.scalars(stmt)])

    def show_rate_sheet(request: Request) -> Response:
        """One rate sheet version with its rates, line by line (the first ``limit``, default 1000)."""
        text, limit = request.path_params["sheet_id"], _limit(request)
        if not text.isdigit() or len(text) > 18:
            raise _not_found("rate sheet", text, "cdrflow rates list")
        with database.transaction() as session:
            version = session.get(RateSheetVersion, int(text))
            if version is None:
                raise _not_found("rate sheet", text, "cdrflow rates list")
            view = rate_sheet_view(version, _active_versions(session))
        rates = rate_views(runtime.store.read_bytes(view["fingerprint"]), view["name"], limit)
        return JSONResponse(view | {"rates": rates})

    def list_clis(request: Request) -> Response:
        """Every customer's CLIs (``customer`` filters to one's), by customer and value."""
        customer = request.query_params.get("customer")
        stmt = select(CustomerCli).order_by(CustomerCli.customer_code, CustomerCli.value, CustomerCli.id)
        with database.transaction() as session:
            if customer:
                if session.get(Customer, customer) is None:
                    raise _not_found("customer", customer, "cdrflow customers list")
                stmt = stmt.where(CustomerCli.customer_code == customer)
            return JSONResponse([cli_view(c) for c in session.scalars(stmt)])

    def show_cli(request: Request) -> Response:
        """A CLI as it was added (a DDI, prefix, range or code) and whose it is: one entry per
        carrier and period it was added for."""
        value = request.path_params["value"]
        with database.transaction() as session:
            for stored in dict.fromkeys((value, value.removeprefix("+"))):  # a DDI is stored without its +
                entries = [cli_view(c) for c in session.scalars(
                    select(CustomerCli).where(CustomerCli.value == stored).order_by(CustomerCli.id))]
                if entries:
                    value = stored
                    break
        if not entries:
            raise _not_found("CLI", value, "cdrflow clis list")
        return JSONResponse({"value": value, "entries": entries})

    return [
        Route("/carriers", list_carriers, methods=["GET"]),
        Route("/carriers/{code}", show_carrier, methods=["GET"]),
        Route("/customers/{code}", show_customer, methods=["GET"]),
        Route("/tariffs", list_tariffs, methods=["GET"]),
        Route("/tariffs/{code}", show_tariff, methods=["GET"]),
        Route("/schedules", list_schedules, methods=["GET"]),
        Route("/schedules/{name}", show_schedule, methods=["GET"]),
        Route("/rate-sheets", list_rate_sheets, methods=["GET"]),
        Route("/rate-sheets/{sheet_id}", show_rate_sheet, methods=["GET"]),
        Route("/clis", list_clis, methods=["GET"]),
        Route("/clis/{value}", show_cli, methods=["GET"]),
    ]
