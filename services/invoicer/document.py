"""The invoice a person reads: one ``InvoiceDocument``, rendered as HTML or as PDF.

A document holds figures already worked out by ``services.invoicer.tax`` (it checks them,
it doesn't compute them), so the HTML, the PDF and the invoice event always show the same
numbers. Rendering is a pure function of the document: the same document gives the same
HTML and the same PDF bytes (no timestamps, no random ids), so a stored invoice can be
rendered again and compared with what the customer got.

Two renderers, two well-kept libraries: Jinja2 (autoescaped: a customer named
``<script>`` is shown, not run) and ReportLab (pure wheel, no system libraries), with the
Bitstream Vera font that ReportLab ships embedded so £, € and most European names render.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from functools import cache
from typing import Any, Literal
from xml.sax.saxutils import escape

import jinja2
from reportlab import __file__ as _reportlab_init
from reportlab.lib import colors
from reportlab.lib.fonts import addMapping
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from cdrflow.errors import InputError
from services.invoicer.tax import UK_RATES, Currency, InvoiceLine, InvoiceTotals, TaxRate, currency, totals

Kind = Literal["invoice", "credit note"]
KINDS: tuple[Kind, ...] = ("invoice", "credit note")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class Seller:
    """The reseller issuing the invoice, as a UK VAT invoice must name it."""

    name: str
    address: tuple[str, ...]
    vat_number: str  # VAT registration number, e.g. "GB123456789"
    email: str


@dataclass(frozen=True)
class Customer:
    """The customer billed: its code (account) and the name and address on the invoice."""

    code: str
    name: str
    address: tuple[str, ...]


@dataclass(frozen=True)
class InvoiceDocument:
    """Everything printed on one invoice or credit note; amounts in minor units.

    ``period_end`` is exclusive (the first day after the period), like every period in
    cdrflow; people are shown the last day, inclusive. An invoice has a due date; a credit
    note names the invoice it credits (``credited_number``).
    """

    seller: Seller
    customer: Customer
    number: str
    issue_date: date  # also the tax point
    period_start: date
    period_end: date  # exclusive
    lines: tuple[InvoiceLine, ...]
    totals: InvoiceTotals
    due_date: date | None = None
    currency: str = "GBP"
    rates: Mapping[str, TaxRate] = field(default_factory=lambda: UK_RATES)
    kind: Kind = "invoice"
    credited_number: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "lines", tuple(self.lines))
        where = f"{self.kind} {self.number!r}"
        if not self.number.strip():
            raise InputError("an invoice document needs a number")
        if self.kind not in KINDS:
            raise InputError(f"{where}: kind must be one of {', '.join(KINDS)}")
        if self.kind == "invoice" and self.due_date is None:
            raise InputError(f"{where}: an invoice needs a due date")
        if self.kind == "credit note" and not self.credited_number:
            raise InputError(f"{where}: a credit note must name the invoice it credits")
        if self.kind == "invoice" and self.credited_number:
            raise InputError(f"{where}: only a credit note credits an invoice")
        if self.period_end <= self.period_start:
            raise InputError(f"{where}: period end {self.period_end} (exclusive) is not after "
                             f"its start {self.period_start}")
        currency(self.currency)  # refuses a currency we can't print
        expected = totals(self.lines, self.rates)
        if self.totals != expected:
            raise InputError(f"{where}: totals {self.totals} are not those of its lines {expected}")

    @property
    def title(self) -> str:
        return "Invoice" if self.kind == "invoice" else "Credit note"

    @property
    def total_label(self) -> str:
        return "Total due" if self.kind == "invoice" else "Total credited"


# --- how figures and dates are shown -------------------------------------------------------


def display_money(amount_minor: int, money: Currency) -> str:
    """An amount as a person reads it: 123456 → "£1,234.56", -1200 → "-£12.00"."""
    sign = "-" if amount_minor < 0 else ""
    units = Decimal(abs(amount_minor)).scaleb(-money.exponent)
    return f"{sign}{money.symbol}{units:,.{money.exponent}f}"


def display_date(day: date) -> str:
    """"1 Nov 2026": unambiguous in any country, and independent of the machine's locale."""
    return f"{day.day} {_MONTHS[day.month - 1]} {day.year}"


def display_period(start: date, end_exclusive: date) -> str:
    """"1 Nov 2026 – 30 Nov 2026" for [1 Nov, 1 Dec): people read the last day inclusive."""
    return f"{display_date(start)} – {display_date(end_exclusive - timedelta(days=1))}"


def _figures(doc: InvoiceDocument) -> dict[str, Any]:
    """What both renderers show, worked out once so HTML and PDF can't disagree."""
    money = currency(doc.currency)
    return {
        "doc": doc,
        "money": lambda minor: display_money(minor, money),
        "rate_label": lambda code: doc.rates[code].label,
        "issue_date": display_date(doc.issue_date),
        "due_date": display_date(doc.due_date) if doc.due_date else None,
        "period": display_period(doc.period_start, doc.period_end),
    }


# --- HTML -----------------------------------------------------------------------------------


@cache
def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("services.invoicer", "templates"),
        autoescape=True,  # always, whatever the template's name: names and addresses are input
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(doc: InvoiceDocument) -> str:
    """The invoice as one self-contained HTML page (inline style, no external assets)."""
    return _templates().get_template("invoice.html.j2").render(_figures(doc))


# --- PDF ------------------------------------------------------------------------------------

_FONT, _FONT_BOLD = "CdrflowVera", "CdrflowVera-Bold"


@cache
def _register_fonts() -> None:
    """Embed the Vera TrueType fonts shipped inside ReportLab: unlike the PDF base fonts
    they carry text beyond Latin-1 (Ł, ć, š; not ź or ő) and need nothing from the system."""
    fonts = os.path.join(os.path.dirname(_reportlab_init), "fonts")
    pdfmetrics.registerFont(TTFont(_FONT, os.path.join(fonts, "Vera.ttf")))
    pdfmetrics.registerFont(TTFont(_FONT_BOLD, os.path.join(fonts, "VeraBd.ttf")))
    addMapping(_FONT, 0, 0, _FONT)
    addMapping(_FONT, 1, 0, _FONT_BOLD)
    addMapping(_FONT, 0, 1, _FONT)
    addMapping(_FONT, 1, 1, _FONT_BOLD)


def render_pdf(doc: InvoiceDocument) -> bytes:
    """The invoice as an A4 PDF whose text (number, names, figures) can be extracted."""
    _register_fonts()
    f = _figures(doc)
    money, rate_label = f["money"], f["rate_label"]
    body = ParagraphStyle("body", fontName=_FONT, fontSize=9, leading=12)
    title = ParagraphStyle("title", parent=body, fontName=_FONT_BOLD, fontSize=18, leading=22)

    def para(text: str, style: ParagraphStyle = body) -> Paragraph:
        # Paragraph reads a markup of its own: every piece of input is escaped first.
        return Paragraph(escape(text), style)

    def lines_of(*texts: str) -> Paragraph:
        return Paragraph("<br/>".join(escape(t) for t in texts), body)

    def grid(rows: Sequence[Sequence[object]], widths: Sequence[float], *, header: bool = False,
             right_from: int | None = 1) -> Table:
        """A table in the body font; columns from ``right_from`` on (figures) right-aligned."""
        table = Table(list(rows), colWidths=list(widths), repeatRows=1 if header else 0, hAlign="LEFT")
        style = [("FONT", (0, 0), (-1, -1), _FONT, 9), ("VALIGN", (0, 0), (-1, -1), "TOP")]
        if right_from is not None:
            style.append(("ALIGN", (right_from, 0), (-1, -1), "RIGHT"))
        if header:
            style += [("FONT", (0, 0), (-1, 0), _FONT_BOLD, 9),
                      ("LINEBELOW", (0, 0), (-1, 0), 0.5, colors.black)]
        table.setStyle(TableStyle(style))
        return table

    details = [["Number", doc.number], ["Date (tax point)", f["issue_date"]]]
    if doc.due_date:
        details.append(["Due date", f["due_date"]])
    if doc.credited_number:
        details.append(["Credits invoice", doc.credited_number])
    details += [["Period", f["period"]], ["Account", doc.customer.code]]
    seller = doc.seller
    head = Table([[lines_of(seller.name, *seller.address, seller.email, f"VAT reg. no. {seller.vat_number}"),
                   grid(details, [32 * mm, 55 * mm], right_from=None)]],
                 colWidths=[90 * mm, 90 * mm], hAlign="LEFT")
    head.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0)]))

    line_rows = [["Description", "Quantity", "VAT rate", "Amount"]] + [
        [para(line.description), str(line.quantity), rate_label(line.tax_code), money(line.amount_minor)]
        for line in doc.lines]
    vat_rows = [["VAT rate", "Net", "VAT"]] + [
        [rate_label(code), money(net), "—" if doc.rates[code].exempt else money(tax)]
        for code, (net, tax) in doc.totals.tax_by_rate.items()]
    sums = grid([["Net", money(doc.totals.net_minor)], ["VAT", money(doc.totals.tax_minor)],
                 [doc.total_label, money(doc.totals.total_minor)]], [40 * mm, 35 * mm])
    sums.setStyle(TableStyle([("FONT", (0, 2), (-1, 2), _FONT_BOLD, 10),
                              ("LINEABOVE", (0, 2), (-1, 2), 0.5, colors.black)]))

    story = [
        para(f"{doc.title} {doc.number}", title), Spacer(1, 4 * mm), head, Spacer(1, 6 * mm),
        para("Bill to", ParagraphStyle("label", parent=body, fontName=_FONT_BOLD)),
        lines_of(doc.customer.name, *doc.customer.address), Spacer(1, 6 * mm),
        grid(line_rows, [95 * mm, 20 * mm, 25 * mm, 40 * mm], header=True), Spacer(1, 6 * mm),
        grid(vat_rows, [40 * mm, 35 * mm, 35 * mm], header=True), Spacer(1, 4 * mm),
        sums,
    ]

    def footer(canvas, template) -> None:
        canvas.saveState()
        canvas.setFont(_FONT, 8)
        canvas.drawString(template.leftMargin, 10 * mm, f"{doc.title} {doc.number} · page {canvas.getPageNumber()}")
        canvas.restoreState()

    out = io.BytesIO()
    SimpleDocTemplate(
        out, pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm, topMargin=15 * mm, bottomMargin=20 * mm,
        title=f"{doc.title} {doc.number}", author=seller.name, subject=f"{doc.customer.name}, {f['period']}",
        creator="cdrflow", lang="en-GB",
        invariant=True,  # no creation time or random id: the same document gives the same bytes
    ).build(story, onFirstPage=footer, onLaterPages=footer)
    return out.getvalue()
