"""Billing over HTTP: closing billing runs by hand, and the charges defined in cdrflow.

``POST /billing-runs`` closes a run through ``services.scheduler.runs.close_run``, the path the
scheduler takes too, with ``closed_by`` the operator (header ``x-operator``): the run row and
its run-closed event are committed together, so a ``202`` reply means the event will follow.
A run closed already answers ``200`` with ``already: true`` and the invoice it made, if any;
nothing new is made.

- ``POST /billing-runs``: ``{"customer": C, "period": P?, "force": false, "reason": R?}``;
  without a period, the latest ended period of the customer's schedule.
- ``GET /customers/{code}/charges``, ``POST /customers/{code}/charges``:
  ``{"description", "amount" (decimal text), "quantity"?, "frequency", "start", "end"?, "tax_code"?}``.
- ``GET /charges`` (every customer's), ``POST /charges/{id}/end``: ``{"on": DATE, "reason": R}``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cdrflow.errors import InputError
from cdrflow.runtime import Runtime
from services.admin.auth import audit_request
from services.admin.reference_api import _json
from services.scheduler.charges import UnknownChargeError, add_charge, charge_view, end_charge, list_charges
from services.scheduler.runs import RunClosed, UnknownCustomerError, close_run, period_to_close


def close_billing_run(session: Session, runtime: Runtime, *, customer: str, period: str | None, operator: str,
                      reason: str | None, force: bool = False) -> RunClosed:
    """Close ``customer``'s run for ``period`` (a label such as 2026-11; None: the latest ended period
    of its schedule), closed by ``operator``: ``POST /billing-runs`` and the console's "Close run" alike.
    The run-closed event goes into the admin outbox in the caller's transaction (``close_run``)."""
    now, zone = datetime.now(UTC), runtime.settings.zone
    closing = period_to_close(session, customer, period, now, zone)
    return close_run(session, customer=customer, period=closing, closed_by=operator, reason=reason,
                     source=runtime.source, publisher="admin", namespace=runtime.settings.namespace, zone=zone,
                     now=now, force=force)


def billing_routes(runtime: Runtime, announced: Callable[[str], bool], queued: str) -> list[Route]:
    """``announced(event_id)`` wakes the admin relay and says whether the broker acknowledged
    the event within a short wait; ``queued`` is the note for a reply when it did not."""
    database = runtime.database

    async def post_billing_run(request: Request) -> Response:
        body = await _json(request)
        customer, label = body.get("customer"), body.get("period")
        if not customer or not isinstance(customer, str):
            raise InputError("a billing run needs 'customer' (and optionally 'period', 'force', 'reason')")
        if label is not None and not isinstance(label, str):
            raise InputError(f"'period' {label!r} must be text such as 2026-11")
        if body.get("reason") is not None and not isinstance(body["reason"], str):
            raise InputError(f"'reason' {body['reason']!r} must be text")
        force = body.get("force", False)
        if not isinstance(force, bool):
            raise InputError(f"'force' {force!r} must be true or false")
        operator = request.headers.get("x-operator", "operator")

        def close() -> RunClosed:
            with database.transaction() as session:
                run = close_billing_run(session, runtime, customer=customer, period=label, operator=operator,
                                        reason=body.get("reason"), force=force)
                if run.created:
                    audit_request(session, request, "billing-run.close", f"{customer} {run.period.label}",
                                  body.get("reason"), {"run_id": run.run_id, "force": force})
                return run

        try:
            run = await run_in_threadpool(close)
        except UnknownCustomerError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        if run.exists:
            made = f"invoice {run.invoice_number}" if run.invoice_number else "no invoice yet (none is made if there is nothing to bill)"
            return JSONResponse(run.view() | {"message": f"closed already by {run.closed_by}: {made}; nothing new made"})
        assert run.event_id is not None
        sent = await run_in_threadpool(announced, run.event_id)
        return JSONResponse(run.view() | {"announced": sent,
                                          "message": "billing run closed" if sent else f"billing run closed; {queued}"},
                            status_code=202)

    def get_charges(request: Request) -> Response:
        customer = request.path_params.get("code") or request.query_params.get("customer")
        try:
            with database.transaction() as session:
                return JSONResponse([charge_view(c) for c in list_charges(session, customer)])
        except UnknownCustomerError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)

    async def post_charge(request: Request) -> Response:
        body = await _json(request)
        unknown = set(body) - {"description", "amount", "quantity", "frequency", "start", "end", "tax_code"}
        if unknown:
            raise InputError(f"unknown field(s) for a charge: {', '.join(sorted(unknown))}")
        missing = [k for k in ("description", "amount", "frequency", "start") if body.get(k) in (None, "")]
        if missing:
            raise InputError(f"a charge needs {', '.join(missing)}")
        operator = request.headers.get("x-operator", "operator")

        def add() -> dict[str, Any]:
            with database.transaction() as session:
                view = charge_view(add_charge(
                    session, customer=request.path_params["code"], description=body["description"],
                    amount=body["amount"], frequency=body["frequency"], start=body["start"], end=body.get("end"),
                    quantity=body.get("quantity", 1), tax_code=body.get("tax_code"), created_by=operator))
                audit_request(session, request, "charge.add", f"charge {view.get('id')}", None,
                              {"customer": request.path_params["code"], "description": body["description"],
                               "amount": str(body["amount"])})
                return view

        try:
            return JSONResponse(await run_in_threadpool(add), status_code=201)
        except UnknownCustomerError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)

    def get_charge(request: Request) -> Response:
        """One charge defined in cdrflow, with how far runs have billed it."""
        from cdrflow.db.models import CustomerCharge

        text = request.path_params["charge_id"]
        with database.transaction() as session:
            charge = session.get(CustomerCharge, int(text)) if text.isdigit() and len(text) < 19 else None
            if charge is None:
                return JSONResponse({"error": f"no charge {text!r}: see 'cdrflow charges list'"}, status_code=404)
            return JSONResponse(charge_view(charge))

    async def post_end_charge(request: Request) -> Response:
        body = await _json(request)
        if not body.get("on"):
            raise InputError("ending a charge needs 'on': the first day no longer charged, YYYY-MM-DD")
        operator = request.headers.get("x-operator", "operator")

        def end() -> dict[str, Any]:
            with database.transaction() as session:
                view = charge_view(end_charge(session, request.path_params["charge_id"], on=body["on"],
                                              reason=body.get("reason") or "", operator=operator))
                audit_request(session, request, "charge.end", f"charge {request.path_params['charge_id']}",
                              body.get("reason") or None, {"on": str(body["on"])})
                return view

        try:
            return JSONResponse(await run_in_threadpool(end))
        except UnknownChargeError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)

    return [
        Route("/billing-runs", post_billing_run, methods=["POST"]),
        Route("/charges", get_charges, methods=["GET"]),
        Route("/charges/{charge_id}", get_charge, methods=["GET"]),
        Route("/customers/{code}/charges", get_charges, methods=["GET"]),
        Route("/customers/{code}/charges", post_charge, methods=["POST"]),
        Route("/charges/{charge_id}/end", post_end_charge, methods=["POST"]),
    ]
