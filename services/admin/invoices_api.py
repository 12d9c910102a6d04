"""Invoices over the admin API: list, show (lines, net, VAT, total, status, credit note), the
PDF, the calls CSV, and a credit note for an issued invoice.

``POST /invoices/{number}/credit`` checks the invoice first (404 unknown, 409 credited
already, naming the credit note; 422 no reason), then publishes a ``credit`` admin command;
the invoicer makes the credit note (``services.invoicer.credit``). This API changes no
billing state itself. The one thing it writes is a cache: a PDF rendered on demand is kept in
the file store and its fingerprint in ``invoices.document`` (the same invoice always renders
to the same bytes, so two requests at once store the same file).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cdrflow.bus import Topic
from cdrflow.db.models import CreditNote, Invoice
from cdrflow.errors import InputError
from cdrflow.events import Event, EventType
from cdrflow.runtime import Runtime
from services.admin.auth import audit_request
from services.invoicer.credit import (
    CREDIT,
    AlreadyCreditedError,
    CreditRefusedError,
    UnknownInvoiceError,
    check_creditable,
    credit_note_of,
)

Publish = Callable[[Topic, str, Event], bool]
"""Queues an event in the outbox; returns whether the broker acknowledged it already."""


def amount_text(amount: Decimal | None) -> str | None:
    """An invoice figure as the API shows it: at least two places ("25.50", "-25.50"); an invoice
    issued before lines were kept in pennies keeps its own places ("0.3154")."""
    if amount is None:
        return None
    pennies = amount.quantize(Decimal("0.01"))
    return f"{pennies:f}" if pennies == amount else f"{amount.normalize():f}"


def credit_note_view(note: CreditNote) -> dict[str, Any]:
    return {"credit_note_number": note.number, "issued_at": note.issued_at.isoformat(), "operator": note.operator,
            "reason": note.reason, "net": amount_text(note.net), "tax": amount_text(note.tax),
            "total": amount_text(note.total), "document": note.document}


def invoice_view(session: Session, invoice: Invoice) -> dict[str, Any]:
    """An invoice as every reader of the API sees it; ``lines`` are its ``charges`` rows, also given
    under that older name for the clients that read it."""
    note = credit_note_of(session, invoice)
    lines = [{"description": c.description, "quantity": c.quantity, "amount": amount_text(c.amount),
              "tax_code": c.tax_code, "kind": c.kind,
              "covered_from": c.covered_from.isoformat() if c.covered_from else None,
              "covered_to": c.covered_to.isoformat() if c.covered_to else None} for c in invoice.charges]
    return {
        "invoice_number": invoice.number, "customer": invoice.customer, "currency": invoice.currency,
        "period_start": invoice.period_start.isoformat(), "period_end": invoice.period_end.isoformat(),
        "issued_at": invoice.issued_at.isoformat(),
        "issued_on": invoice.issued_on.isoformat() if invoice.issued_on else None,
        "due_on": invoice.due_on.isoformat() if invoice.due_on else None,
        "status": invoice.status, "net": amount_text(invoice.net), "tax": amount_text(invoice.tax),
        "total": amount_text(invoice.total), "lines": lines, "charges": lines,
        "calls_csv": invoice.calls_csv, "document": invoice.document,
        "credit_note": credit_note_view(note) if note else None,
    }


def _invoice(session: Session, number: str) -> Invoice:
    invoice = session.scalar(select(Invoice).where(Invoice.number == number))
    if invoice is None:
        raise HTTPException(404, str(UnknownInvoiceError(number)))
    return invoice


def invoice_pdf_bytes(session: Session, invoice: Invoice, runtime: Runtime) -> bytes:
    """The invoice's PDF: the one stored, or rendered now, stored, and remembered on the invoice."""
    from services.invoicer.render import invoice_pdf

    if invoice.document and runtime.store.exists(invoice.document):
        return runtime.store.read_bytes(invoice.document)
    pdf = invoice_pdf(session, invoice, runtime.settings)
    stored = runtime.store.put_bytes(pdf)
    session.execute(update(Invoice).where(Invoice.id == invoice.id).values(document=stored.fingerprint))
    return pdf


def invoice_csv_bytes(session: Session, invoice: Invoice, runtime: Runtime) -> bytes:
    """The CSV of the invoice's calls as issued (stored by the run); rendered now only for an
    invoice issued without one, while its calls are still on it."""
    from services.invoicer.render import invoice_calls_csv

    if invoice.calls_csv and runtime.store.exists(invoice.calls_csv):
        return runtime.store.read_bytes(invoice.calls_csv)
    if invoice.status != "issued":
        raise HTTPException(409, f"invoice {invoice.number} is {invoice.status} and has no stored calls CSV: "
                                 "its calls are unbilled again and go on the customer's next invoice")
    return invoice_calls_csv(session, invoice, runtime.settings.zone)


def credit_command(session: Session, number: str, *, operator: str, reason: str, source: str) -> Event:
    """The ``credit`` admin command for invoice ``number``, once it is checked to be creditable
    (else UnknownInvoiceError, AlreadyCreditedError or CreditRefusedError): ``POST
    /invoices/{number}/credit`` and the console's Credit alike. The caller publishes it to
    admin-commands; the invoicer makes the credit note."""
    check_creditable(session, number)
    return Event(type=EventType.ADMIN_COMMAND, source=source, subject=number, id=str(uuid.uuid4()),
                 data={"command": CREDIT, "invoice_number": number, "operator": operator, "reason": reason})


def invoices_routes(runtime: Runtime, publish: Publish) -> list[Route]:
    def list_endpoint(request: Request) -> Response:
        with runtime.database.transaction() as session:
            stmt = select(Invoice).where(Invoice.number.is_not(None)).order_by(Invoice.id)
            if customer := request.query_params.get("customer"):
                stmt = stmt.where(Invoice.customer == customer)
            if status := request.query_params.get("status"):
                stmt = stmt.where(Invoice.status == status)
            return JSONResponse([invoice_view(session, i) for i in session.scalars(stmt)])

    def show_endpoint(request: Request) -> Response:
        with runtime.database.transaction() as session:
            return JSONResponse(invoice_view(session, _invoice(session, request.path_params["number"])))

    async def pdf_endpoint(request: Request) -> Response:
        number = request.path_params["number"]

        def pdf() -> bytes:
            with runtime.database.transaction() as session:
                return invoice_pdf_bytes(session, _invoice(session, number), runtime)

        return Response(await run_in_threadpool(pdf), media_type="application/pdf",
                        headers={"content-disposition": f'attachment; filename="{number}.pdf"'})

    async def csv_endpoint(request: Request) -> Response:
        number = request.path_params["number"]

        def csv() -> bytes:
            with runtime.database.transaction() as session:
                return invoice_csv_bytes(session, _invoice(session, number), runtime)

        return Response(await run_in_threadpool(csv), media_type="text/csv; charset=utf-8",
                        headers={"content-disposition": f'attachment; filename="{number}-calls.csv"'})

    async def credit_endpoint(request: Request) -> Response:
        number = request.path_params["number"]
        try:
            body = await request.json() if await request.body() else {}
        except ValueError as exc:  # not JSON, or not UTF-8
            raise InputError(f"the request body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise InputError("the body of a credit is a JSON object such as {\"reason\": \"...\"}")
        reason = str(body.get("reason") or "").strip()
        if not reason:
            raise InputError(f"crediting invoice {number} needs a reason (recorded with who and when)")
        operator = request.headers.get("x-operator", "operator")

        def check() -> JSONResponse | Event:
            with runtime.database.transaction() as session:
                try:
                    event = credit_command(session, number, operator=operator, reason=reason, source=runtime.source)
                    audit_request(session, request, "invoice.credit", number, reason)
                    return event
                except UnknownInvoiceError as exc:
                    raise HTTPException(404, str(exc)) from exc
                except AlreadyCreditedError as exc:
                    return JSONResponse({"error": str(exc), "invoice_number": number,
                                         "credit_note_number": exc.credit_note}, status_code=409)
                except CreditRefusedError as exc:
                    raise HTTPException(409, str(exc)) from exc

        event = await run_in_threadpool(check)
        if isinstance(event, JSONResponse):
            return event
        command_id = event.id
        announced = await run_in_threadpool(publish, Topic.ADMIN_COMMANDS, number, event)
        return JSONResponse({"command_id": command_id, "command": CREDIT, "invoice_number": number,
                             "announced": announced}, status_code=202)

    return [
        Route("/invoices", list_endpoint, methods=["GET"]),
        Route("/invoices/{number}", show_endpoint, methods=["GET"]),
        Route("/invoices/{number}/pdf", pdf_endpoint, methods=["GET"]),
        Route("/invoices/{number}/calls.csv", csv_endpoint, methods=["GET"]),
        Route("/invoices/{number}/credit", credit_endpoint, methods=["POST"]),
    ]
