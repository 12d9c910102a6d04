"""Email deliveries of invoices and credit notes: list them (all, or a document's), send one again.

``POST /invoices/{number}/send`` queues a *new* delivery (a new Message-ID, ``requested_by``
the operator) for the sender service, to the customer's billing email or to ``to``. The
delivery row is the request: the sender works from the deliveries table, as a relay works
from the outbox, so no event is needed and the reply can name the delivery. This is how an
``uncertain`` delivery (the mail may or may not have gone) or one that ran out of attempts
is sent again, on purpose; the sender never does it by itself."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cdrflow.db.models import CreditNote, Customer, Invoice, InvoiceDelivery
from cdrflow.errors import InputError
from cdrflow.log import get_logger
from cdrflow.runtime import Runtime
from services.admin.auth import audit_request
from services.sender.delivery import STATUSES, deliveries_of, queue_resend

log = get_logger(__name__)

LIST_LIMIT = 500
"""Most deliveries ``GET /deliveries`` lists (a document's own list is whole)."""


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def delivery_view(d: InvoiceDelivery) -> dict[str, Any]:
    return {"id": d.id, "document_number": d.document_number, "to": d.to_address, "status": d.status,
            "attempts": d.attempts, "last_error": d.last_error, "next_attempt_at": _iso(d.next_attempt_at),
            "message_id": d.message_id, "requested_by": d.requested_by, "created_at": _iso(d.created_at),
            "sent_at": _iso(d.sent_at)}


def document_customer(session: Session, number: str) -> str:
    """The customer of the invoice or credit note ``number``; 404 when there is none."""
    customer = session.scalar(select(Invoice.customer).where(Invoice.number == number))
    if customer is None:
        customer = session.scalar(select(Invoice.customer).join(CreditNote, CreditNote.invoice_id == Invoice.id)
                                  .where(CreditNote.number == number))
    if customer is None:
        raise HTTPException(404, f"no invoice or credit note {number} (see 'cdrflow invoices list')")
    return customer


def resend_document(session: Session, number: str, to: str, operator: str, mail_from: str) -> InvoiceDelivery:
    """Queue a new delivery of invoice or credit note ``number`` to ``to``, or (empty) to the customer's
    billing email: ``POST /invoices/{number}/send`` and the console's Resend alike."""
    code = document_customer(session, number)
    to = to.strip()
    if not to:
        customer = session.get(Customer, code)
        to = (customer.billing_email or "").strip() if customer else ""
    if not to:
        raise InputError(f"customer {code} has no billing email: set one (cdrflow customers add "
                         f"{code} … --email ADDRESS) or give an address with --to")
    return queue_resend(session, number, to, operator, mail_from, datetime.now(UTC))


def delivery_routes(runtime: Runtime) -> list[Route]:
    settings = runtime.settings

    def all_endpoint(request: Request) -> Response:
        """``GET /deliveries[?status=…]``: the newest deliveries of every document, newest first."""
        status = request.query_params.get("status")
        if status and status not in STATUSES:
            raise InputError(f"unknown delivery status {status!r} (one of {', '.join(STATUSES)})")
        stmt = select(InvoiceDelivery).order_by(InvoiceDelivery.id.desc()).limit(LIST_LIMIT)
        if status:
            stmt = stmt.where(InvoiceDelivery.status == status)
        with runtime.database.transaction() as session:
            return JSONResponse([delivery_view(d) for d in session.scalars(stmt)])

    def list_endpoint(request: Request) -> Response:
        number = request.path_params["number"]
        with runtime.database.transaction() as session:
            document_customer(session, number)
            return JSONResponse([delivery_view(d) for d in deliveries_of(session, number)])

    async def send_endpoint(request: Request) -> Response:
        number = request.path_params["number"]
        try:
            body = await request.json() if await request.body() else {}
        except ValueError as exc:  # not JSON, or not UTF-8
            raise InputError(f"the request body is not JSON: {exc}") from exc
        if not isinstance(body, dict) or not isinstance(body.get("to") or "", str):
            raise InputError('the body of a send is a JSON object such as {"to": "accounts@customer.example"}')
        operator = request.headers.get("x-operator", "operator")

        def resend() -> dict[str, Any]:
            with runtime.database.transaction() as session:
                view = delivery_view(resend_document(session, number, body.get("to") or "", operator,
                                                     settings.mail_from))
                audit_request(session, request, "invoice.send", number, None, {"to": view.get("to")})
                return view

        reply = await run_in_threadpool(resend)
        log.info("delivery_requested", document=number, to=reply["to"], message_id=reply["message_id"],
                 operator=operator)
        return JSONResponse(reply, status_code=202)

    return [
        Route("/deliveries", all_endpoint, methods=["GET"]),
        Route("/invoices/{number}/deliveries", list_endpoint, methods=["GET"]),
        Route("/invoices/{number}/send", send_endpoint, methods=["POST"]),
    ]
