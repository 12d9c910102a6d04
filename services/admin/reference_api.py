"""Reference data over HTTP: tariffs, customers and their CLIs, rate sheets, reconciliation.

The same library calls as the CLI (``services.rater.reference``); every change lands in the
reference change log, which is how the rater knows to reload its plan and re-rate the calls
waiting in reconciliation. A rate sheet or a customers file with problems is refused whole
with every problem and its line number (HTTP 422): the active sheet stays active, and no
customer or CLI of the file is stored.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cdrflow.db.models import Customer
from cdrflow.errors import InputError
from cdrflow.runtime import Runtime
from services.admin.auth import audit_request
from services.rater.plan import Tariff
from services.rater.ratesheet import RateSheetError
from services.rater.recon import fee_reconciliation, reconciliation, recon_view
from cdrflow.reference import ReferenceDataError
from services.rater.reference import (
    add_cli_with_warnings,
    load_customers_csv,
    load_rate_sheet,
    save_customer,
    save_tariff,
)
from services.scheduler.customers import set_billing_terms

MAX_SHEET_BYTES = 200_000_000
"""A rate sheet is validated whole in memory; 200 MB is far beyond any real deck."""
MAX_CUSTOMERS_BYTES = 200_000_000
"""A customers file is validated whole in memory too (a million CLIs is about 50 MB)."""


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as exc:
        raise InputError(f"the request body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InputError("the request body must be a JSON object")
    return body


def _date(body: dict[str, Any], key: str) -> date | None:
    text = body.get(key)
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{key} {text!r} is not a date YYYY-MM-DD") from exc


def customer_view(customer: Customer) -> dict[str, Any]:
    return {
        "customer": customer.code, "name": customer.name, "tariff": customer.tariff,
        "billing_schedule": customer.billing_schedule, "billing_email": customer.billing_email,
        "tax_code": customer.tax_code, "currency": customer.currency, "address": customer.address,
        "payment_terms_days": customer.payment_terms_days,
        "clis": [{"kind": c.kind, "value": c.value, "carrier": c.carrier,
                  "effective_from": c.effective_from.isoformat() if c.effective_from else None,
                  "effective_to": c.effective_to.isoformat() if c.effective_to else None} for c in customer.clis],
    }


def reference_routes(runtime: Runtime) -> list[Route]:
    database = runtime.database

    def list_customers(_: Request) -> Response:
        with database.transaction() as session:
            return JSONResponse([customer_view(c) for c in session.scalars(
                select(Customer).options(selectinload(Customer.clis)).order_by(Customer.code))])

    async def put_customer(request: Request) -> Response:
        code, body = request.path_params["code"], await _json(request)
        if not body.get("name"):
            raise InputError(f"customer {code}: 'name' is required")
        for key in ("name", "tariff", "billing_schedule", "billing_email", "tax_code", "currency", "address"):
            if body.get(key) is not None and not isinstance(body[key], str):
                raise InputError(f"customer {code}: '{key}' {body[key]!r} must be text")
        terms = body.get("payment_terms_days")
        if terms is not None and (isinstance(terms, bool) or not isinstance(terms, int)):
            raise InputError(f"customer {code}: 'payment_terms_days' {terms!r} must be a whole number of days")

        def save() -> dict[str, Any]:
            with database.transaction() as session:
                customer = save_customer(session, code, body["name"], body.get("tariff"))
                set_billing_terms(session, customer, schedule=body.get("billing_schedule", "monthly"),
                                  email=body.get("billing_email") or "", tax_code=body.get("tax_code"),
                                  currency_code=body.get("currency"), address=body.get("address"),
                                  terms_days=body.get("payment_terms_days"))
                session.flush()
                audit_request(session, request, "customer.save", code, None, {"name": body["name"]})
                return customer_view(customer)

        return JSONResponse(await run_in_threadpool(save))

    async def post_cli(request: Request) -> Response:
        code, body = request.path_params["code"], await _json(request)
        if not body.get("cli"):
            raise InputError("'cli' is required: +44…, a prefix +44…*, a range FROM-TO, or an account/trunk code")

        def save() -> dict[str, Any]:
            with database.transaction() as session:
                added = add_cli_with_warnings(session, code, body["cli"], kind=body.get("kind"),
                                              carrier=body.get("carrier"), effective_from=_date(body, "effective_from"),
                                              effective_to=_date(body, "effective_to"))
                row = added.row
                audit_request(session, request, "cli.add", f"{code} {row.value}", None, {"kind": row.kind})
                return {"customer": code, "kind": row.kind, "value": row.value, "carrier": row.carrier,
                        "warnings": list(added.warnings)}

        return JSONResponse(await run_in_threadpool(save), status_code=201)

    async def post_customers_load(request: Request) -> Response:
        """Body: a customers CSV as ``cdrflow customers load`` takes it; query: name (for the
        change log and problems). All or nothing: 422 with every problem and its line."""
        content = await request.body()
        if len(content) > MAX_CUSTOMERS_BYTES:
            raise InputError(f"customers file of {len(content)} bytes is over the limit of {MAX_CUSTOMERS_BYTES}")
        name = request.query_params.get("name", "upload.csv")

        def load() -> dict[str, Any]:
            with database.transaction() as session:
                loaded = asdict(load_customers_csv(session, content, source=name))
                audit_request(session, request, "customers.load", name, None, {"bytes": len(content)})
                return loaded

        try:
            return JSONResponse(await run_in_threadpool(load))
        except ReferenceDataError as exc:
            return JSONResponse({"error": str(exc), "problems": exc.problems}, status_code=422)

    async def put_tariff(request: Request) -> Response:
        code, body = request.path_params["code"], await _json(request)
        try:
            tariff = Tariff(code, schedule=body.get("schedule", "uk-default"),
                            split_bands=bool(body.get("split_bands", False)), places=int(body.get("places", 4)),
                            rounding=body.get("rounding", "half-up"),
                            charge_unanswered=bool(body.get("charge_unanswered", False)))
        except (TypeError, ValueError) as exc:
            raise InputError(f"tariff {code}: {exc}") from exc

        def save() -> None:
            with database.transaction() as session:
                save_tariff(session, tariff, body.get("name"))
                audit_request(session, request, "tariff.save", code)

        await run_in_threadpool(save)
        return JSONResponse({"tariff": code, "schedule": tariff.schedule, "split_bands": tariff.split_bands,
                             "places": tariff.places, "rounding": tariff.rounding})

    async def post_rate_sheet(request: Request) -> Response:
        """Query: kind (retail|wholesale), owner (tariff or carrier), direction, carrier
        (retail override), name; body: the CSV."""
        q = request.query_params
        missing = [k for k in ("kind", "owner") if not q.get(k)]
        if missing:
            raise InputError(f"missing query parameter(s): {', '.join(missing)}")
        content = await request.body()
        if len(content) > MAX_SHEET_BYTES:
            raise InputError(f"rate sheet of {len(content)} bytes is over the limit of {MAX_SHEET_BYTES}")

        def load() -> dict[str, Any]:
            with database.transaction() as session:
                version = load_rate_sheet(session, runtime.store, content, source_name=q.get("name", "upload.csv"),
                                          kind=q["kind"], owner=q["owner"], direction=q.get("direction", "outbound"),
                                          carrier=q.get("carrier", ""))
                audit_request(session, request, "rate-sheet.load", f"{version.kind} {version.owner} v{version.version}",
                              None, {"name": q.get("name", "upload.csv"), "rows": version.rows})
                return {"kind": version.kind, "owner": version.owner, "direction": version.direction,
                        "carrier": version.carrier, "version": version.version, "rows": version.rows}

        try:
            return JSONResponse(await run_in_threadpool(load), status_code=201)
        except RateSheetError as exc:
            return JSONResponse({"error": str(exc), "problems": exc.problems}, status_code=422)

    def recon(_: Request) -> Response:
        with database.transaction() as session:
            return JSONResponse(recon_view(reconciliation(session), fee_reconciliation(session)))

    return [
        Route("/customers", list_customers, methods=["GET"]),
        Route("/customers/load", post_customers_load, methods=["POST"]),
        Route("/customers/{code}", put_customer, methods=["PUT"]),
        Route("/customers/{code}/clis", post_cli, methods=["POST"]),
        Route("/tariffs/{code}", put_tariff, methods=["PUT"]),
        Route("/rate-sheets", post_rate_sheet, methods=["POST"]),
        Route("/recon", recon, methods=["GET"]),
    ]
