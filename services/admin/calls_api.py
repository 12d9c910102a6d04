"""What is not billed yet, over HTTP (read only; the queries are ``services.invoicer.unbilled``).

- ``GET /customers/{code}/calls?from=YYYY-MM-DD&to=YYYY-MM-DD&unbilled=true&limit=100&offset=0``:
  first ``unbilled``, the totals of the customer's unbilled calls over the same days (count,
  ``charge`` rounded once, half up, to the penny, ``charge_micros`` the exact sum in millionths,
  ``in_unrated_files`` how many of them a run would not bill yet), then the calls, by start.
  ``from`` and ``to`` are local days in the operator's zone, ``to`` included; either may be left
  out. ``unbilled=true`` lists only the unbilled calls; otherwise every call of the customer,
  each with its invoice number (null if on none).
- ``GET /customers/{code}/unbilled``: the charges and fixed fees not billed yet, the total
  first: recurring charges as the next run bills them, one-off charges not billed, priced fixed
  fees on no invoice; ``next_run`` on each says whether the customer's next run bills it.

An unknown customer is 404; a day, flag or number that is not one is 400, saying which.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cdrflow.runtime import Runtime
from services.invoicer.tax import Currency, currency
from services.invoicer.unbilled import (
    BadDateError,
    CallRow,
    UnbilledCharges,
    UnbilledItem,
    customer_calls,
    parse_day_range,
    unbilled_charges,
)
from services.scheduler.runs import UnknownCustomerError

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no", "")


class BadQueryError(BadDateError):
    """A query parameter that is not what it must be (a flag, a count)."""


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _flag(request: Request, name: str) -> bool:
    text = request.query_params.get(name, "").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise BadQueryError(f"'{name}' {text!r} is not true or false")


def _count(request: Request, name: str, default: int, least: int, most: int | None = None) -> int:
    text = request.query_params.get(name)
    if text is None or not text.strip():
        return default
    if not text.strip().isdigit() or int(text) < least or (most is not None and int(text) > most):
        limits = f"{least} to {most}" if most is not None else f"at least {least}"
        raise BadQueryError(f"'{name}' {text!r} is not a whole number {limits}")
    return int(text)


def money_text(minor: int, money: Currency) -> str:
    """Minor units as the currency's amount with its places: 113 → "1.13"."""
    return f"{Decimal(minor).scaleb(-money.exponent):f}"


def call_view(call: CallRow) -> dict[str, Any]:
    return {"start": call.start.isoformat(), "cli": call.cli, "dialled": call.dialled,
            "destination": call.destination, "band": call.band, "duration": call.duration,
            "billable_seconds": call.billable_seconds,
            "charge": None if call.charge is None else f"{call.charge:f}", "status": call.status,
            "set_aside": call.set_aside, "invoice_number": call.invoice_number, "file_id": call.file_id}


def _day(d: date | None) -> str | None:
    return None if d is None else d.isoformat()


def item_view(item: UnbilledItem, money: Currency) -> dict[str, Any]:
    return {"kind": item.kind, "description": item.description, "quantity": item.quantity,
            "amount": money_text(item.amount_minor, money), "next_run": item.next_run, "charge_id": item.charge_id,
            "carrier_transaction_id": item.carrier_transaction_id, "covered_from": _day(item.covered_from),
            "covered_to": _day(item.covered_to), "charge_on": _day(item.charge_on), "file_id": item.file_id}


def charges_view(unbilled: UnbilledCharges) -> dict[str, Any]:
    money, period = unbilled.money, unbilled.next_period
    return {"customer": unbilled.customer.code, "total": money_text(unbilled.total_minor, money),
            "currency": money.code,
            "next_run": {"period": period.label, "period_start": period.start.isoformat(),
                         "period_end": period.end.isoformat(), "total": money_text(unbilled.next_run_minor, money)},
            "items": [item_view(i, money) for i in unbilled.items]}


def calls_routes(runtime: Runtime) -> list[Route]:
    database, zone = runtime.database, runtime.settings.zone

    def get_calls(request: Request) -> Response:
        code = request.path_params["code"]
        try:
            days = parse_day_range(request.query_params.get("from"), request.query_params.get("to"))
            only_unbilled = _flag(request, "unbilled")
            limit = _count(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
            offset = _count(request, "offset", 0, 0)
        except BadDateError as exc:
            return _error(400, str(exc))
        try:
            with database.transaction() as session:
                page = customer_calls(session, code, zone, days=days, unbilled_only=only_unbilled,
                                      limit=limit, offset=offset)
        except UnknownCustomerError as exc:
            return _error(404, str(exc))
        money = currency(page.customer.currency)
        totals = page.unbilled
        return JSONResponse({
            "customer": code, "currency": money.code,
            "unbilled": {"calls": totals.calls, "charge": money_text(totals.charge_minor(money), money),
                         "charge_micros": totals.charge_micros, "in_unrated_files": totals.in_unrated_files},
            "zone": str(zone), "from": _day(page.days.first), "to": _day(page.days.last), "to_inclusive": True,
            "unbilled_only": only_unbilled,
            "matched": page.matched, "limit": limit, "offset": offset,
            "calls": [call_view(c) for c in page.calls],
        })

    def get_unbilled(request: Request) -> Response:
        try:
            with database.transaction() as session:
                unbilled = unbilled_charges(session, request.path_params["code"], datetime.now(UTC), zone)
                return JSONResponse(charges_view(unbilled))
        except UnknownCustomerError as exc:
            return _error(404, str(exc))

    return [
        Route("/customers/{code}/calls", get_calls, methods=["GET"]),
        Route("/customers/{code}/unbilled", get_unbilled, methods=["GET"]),
    ]
