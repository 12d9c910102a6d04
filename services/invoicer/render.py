"""An issued invoice (or credit note) as people read it: its document, its PDF, its calls CSV.

Documents are rendered after the billing run, by whoever needs them (the mailer, ``cdrflow
invoices pdf``, the API), from what the run stored: the invoice's lines (``charges``), its
figures, the customer and the seller details in settings. Nothing here writes to the database.

The figures are not worked out again differently: the lines are read back in pennies and
``services.invoicer.tax.totals`` gives the net, VAT and total, which must equal those the run
stored (``InvoiceFiguresError`` otherwise), so the PDF, the event and the database agree.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from zoneinfo import ZoneInfo

import polars as pl
from sqlalchemy import BigInteger, DateTime, String, select, type_coerce
from sqlalchemy.orm import Session

from cdrflow.db.models import Call, Charge, CreditNote, Invoice
from cdrflow.db.models import Customer as CustomerRow
from cdrflow.errors import ConfigurationError, InputError
from cdrflow.settings import Settings
from services.invoicer.document import Customer, InvoiceDocument, Seller, render_pdf
from services.invoicer.invoice import CALL_FRAME_SCHEMA, calls_csv, calls_csvs
from services.invoicer.tax import UK_RATES, InvoiceLine, currency, totals

_ADDRESS_BREAK = re.compile(r"\s*(?:\||\r?\n)\s*")


class InvoiceFiguresError(InputError):
    """An invoice's stored net, VAT or total is not what its stored lines add up to."""


def address_lines(text: str | None) -> tuple[str, ...]:
    """An address as stored ("1 High St|Leeds" or one line per line) as its non-empty lines."""
    return tuple(line for line in _ADDRESS_BREAK.split(text or "") if line)


def seller(settings: Settings) -> Seller:
    """The reseller as its invoices name it, from settings; a document needs at least its name."""
    if not settings.seller_name.strip():
        raise ConfigurationError("the seller's name is not set, so no invoice can be rendered: "
                                 "set CDRFLOW_SELLER_NAME (and CDRFLOW_SELLER_ADDRESS, _VAT_NUMBER, _EMAIL)")
    return Seller(settings.seller_name.strip(), address_lines(settings.seller_address),
                  settings.seller_vat_number.strip(), settings.seller_email.strip())


def invoice_document(session: Session, invoice: Invoice, settings: Settings) -> InvoiceDocument:
    """The invoice as printed: its stored lines and figures, its customer, the seller."""
    lines = _lines(invoice)
    figures = totals(lines, UK_RATES)
    _check_stored_figures(invoice.number, invoice, figures.net_minor, figures.tax_minor, figures.total_minor,
                          invoice.currency)
    return InvoiceDocument(
        seller=seller(settings), customer=_customer(session, invoice.customer), number=_number(invoice),
        issue_date=_issued_on(invoice, settings.zone), due_date=invoice.due_on,
        period_start=invoice.period_start, period_end=invoice.period_end,
        lines=lines, totals=figures, currency=invoice.currency, rates=UK_RATES)


def credit_note_document(session: Session, note: CreditNote, settings: Settings) -> InvoiceDocument:
    """The credit note as printed: the credited invoice's lines, each negated, and its period."""
    invoice = session.get(Invoice, note.invoice_id)
    if invoice is None:
        raise InputError(f"credit note {note.number} credits invoice id {note.invoice_id}, which does not exist")
    lines = tuple(InvoiceLine(line.description, line.quantity, -line.amount_minor, line.tax_code)
                  for line in _lines(invoice))
    figures = totals(lines, UK_RATES)
    _check_stored_figures(note.number, note, figures.net_minor, figures.tax_minor, figures.total_minor,
                          invoice.currency)
    return InvoiceDocument(
        seller=seller(settings), customer=_customer(session, invoice.customer), number=note.number,
        issue_date=note.issued_at.astimezone(settings.zone).date(),
        period_start=invoice.period_start, period_end=invoice.period_end,
        lines=lines, totals=figures, currency=invoice.currency, rates=UK_RATES,
        kind="credit note", credited_number=_number(invoice))


def invoice_pdf(session: Session, invoice: Invoice, settings: Settings) -> bytes:
    """The invoice's PDF (the same invoice always gives the same bytes)."""
    return render_pdf(invoice_document(session, invoice, settings))


def invoice_calls_csv(session: Session, invoice: Invoice, zone: ZoneInfo) -> bytes:
    """The CSV of the invoice's calls (``invoice.calls_csv``), in call order: start, then file
    and row; times in ``zone``."""
    return invoice_calls_csvs(session, [invoice.id], zone)[invoice.id]


def invoice_calls_csvs(session: Session, invoice_ids: list[int], zone: ZoneInfo) -> dict[int, bytes]:
    """``invoice_calls_csv`` of each invoice, from one query for all of them, read in chunks
    so a million calls are never held as Python rows at once (``invoice.calls_csvs``). The
    start and the charge are read as the database keeps them (SQLite's text, integer micros)
    and converted by polars, not row by row."""
    dialect = session.get_bind().dialect
    sqlite = dialect.name == "sqlite"
    start = type_coerce(Call.start, String if sqlite else DateTime(timezone=True))
    query = (select(Call.invoice_id, start, Call.cli, Call.dialled, Call.destination, Call.band, Call.duration,
                    Call.billable_seconds, type_coerce(Call.charge, BigInteger))
             .where(Call.invoice_id.in_([int(i) for i in invoice_ids]))
             .order_by(Call.invoice_id, Call.start, Call.file_id, Call.row))
    # On the driver's own cursor: SQLAlchemy's rows cost more than the query here. The only
    # values in the statement are the invoice ids, integers, written into it.
    cursor = session.connection().connection.cursor()
    try:
        cursor.execute(str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True})))
        schema = CALL_FRAME_SCHEMA | ({"start": pl.String} if sqlite else {})
        frames = []
        while chunk := cursor.fetchmany(CSV_CHUNK_ROWS):
            frames.append(pl.DataFrame(chunk, schema=schema, orient="row"))
    finally:
        cursor.close()
    calls = pl.concat(frames) if frames else pl.DataFrame(schema=schema)
    if sqlite:  # SQLAlchemy's text of a UTC instant: "2026-10-02 09:15:00.000000"
        calls = calls.with_columns(pl.col("start").str.to_datetime(SQLITE_TIME, time_zone="UTC"))
    csvs = calls_csvs(calls, zone)
    empty = calls_csv((), zone)
    return {invoice_id: csvs.get(invoice_id, empty) for invoice_id in invoice_ids}


SQLITE_TIME = "%Y-%m-%d %H:%M:%S%.f"
CSV_CHUNK_ROWS = 50_000


# --- helpers -------------------------------------------------------------------------------


def _number(invoice: Invoice) -> str:
    if not invoice.number:
        raise InputError(f"invoice id {invoice.id} has no number, so it was never issued")
    return invoice.number


def _lines(invoice: Invoice) -> tuple[InvoiceLine, ...]:
    """The invoice's stored lines (``charges``, in the order issued) in minor units."""
    money = currency(invoice.currency)
    charges: list[Charge] = list(invoice.charges)
    return tuple(InvoiceLine(c.description, c.quantity, _minor(c.amount, money.exponent, invoice, c.description),
                             c.tax_code) for c in charges)


def _minor(amount: Decimal, exponent: int, invoice: Invoice, description: str) -> int:
    minor = amount.scaleb(exponent)
    if minor != minor.to_integral_value():
        raise InvoiceFiguresError(f"invoice {invoice.number}: line {description!r} is {amount}, not a whole number "
                                  "of minor units (an invoice issued before lines were kept in pennies?)")
    return int(minor)


def _check_stored_figures(number: str | None, stored: Invoice | CreditNote, net: int, tax: int, total: int,
                          code: str) -> None:
    exponent = currency(code).exponent
    if stored.net is None or stored.tax is None:
        raise InvoiceFiguresError(f"{number}: no net and VAT stored (issued before invoices carried VAT), "
                                  "so it can't be rendered as a VAT invoice")
    worked_out = tuple(Decimal(v).scaleb(-exponent) for v in (net, tax, total))
    if (stored.net, stored.tax, stored.total) != worked_out:
        raise InvoiceFiguresError(f"{number}: stored net/VAT/total {stored.net}/{stored.tax}/{stored.total} are not "
                                  f"those of its lines {'/'.join(str(v) for v in worked_out)}")


def _customer(session: Session, code: str) -> Customer:
    row = session.get(CustomerRow, code)
    if row is None:
        raise InputError(f"customer {code!r} of the invoice does not exist")
    return Customer(row.code, row.name, address_lines(row.address))


def _issued_on(invoice: Invoice, zone: ZoneInfo) -> date:
    return invoice.issued_on or invoice.issued_at.astimezone(zone).date()
