"""Invoice arithmetic (services.invoicer.tax) and the invoice document (HTML, PDF).

Each rule has its own test with the numbers written out; docs/billing.md's worked example
is read from the page itself, so the page and the code can't drift apart.
"""

from __future__ import annotations

import io
import re
from datetime import date
from decimal import Decimal
from pathlib import Path

import pypdf
import pytest

from cdrflow.errors import InputError
from cdrflow.money import MoneyError, to_micros
from services.invoicer.document import (
    Customer,
    InvoiceDocument,
    Seller,
    display_money,
    display_period,
    render_html,
    render_pdf,
)
from services.invoicer.tax import (
    CALL_CHARGES,
    GBP,
    UK_RATES,
    InvoiceLine,
    TaxRate,
    UnknownCurrencyError,
    UnknownTaxCodeError,
    call_charges_line,
    call_charges_minor,
    currency,
    tax_rates,
    totals,
)

BILLING_DOC = Path(__file__).resolve().parents[2] / "docs" / "billing.md"
SELLER = Seller("Northern Voice Ltd", ("1 Mill Lane", "Leeds", "LS1 1AA"), "GB123456789",
                "billing@northernvoice.example")
CUSTOMER = Customer("ACME", "Acme Widgets plc", ("2 Dock Road", "Hull", "HU1 2BB"))


def invoice(lines, *, customer=CUSTOMER, rates=UK_RATES, **kwargs) -> InvoiceDocument:
    lines = tuple(lines)
    fields = dict(number="INV-000123", issue_date=date(2026, 12, 1), period_start=date(2026, 11, 1),
                  period_end=date(2026, 12, 1), due_date=date(2026, 12, 31))
    fields.update(kwargs)
    return InvoiceDocument(SELLER, customer, lines=lines, totals=totals(lines, rates), rates=rates, **fields)


def pdf_text(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(pdf)).pages)


# --- Call Charges: the exact sum rounded once, half up ----------------------------------------


def test_call_charges_round_exactly_half_a_penny_up():
    assert call_charges_minor(5_000) == 1  # £0.005000 → £0.01


def test_call_charges_round_just_under_half_a_penny_down():
    assert call_charges_minor(4_999) == 0  # £0.004999 → £0.00


def test_negative_call_charges_round_half_a_penny_away_from_zero():
    assert call_charges_minor(-5_000) == -1  # -£0.005 → -£0.01, as Decimal ROUND_HALF_UP does
    assert call_charges_minor(-4_999) == 0
    assert call_charges_minor(-25_000) == -3  # -£0.025 → -£0.03, where banker's rounding gives -£0.02


def test_call_charges_are_summed_before_rounding_not_rounded_per_call():
    charges = [123_450, 50, 1_004_999]  # £0.123450, £0.000050, £1.004999
    assert call_charges_minor(sum(charges)) == 113
    assert sum(call_charges_minor(c) for c in charges) == 112  # what per-call rounding would lose


def test_call_charges_line_names_the_calls_and_their_count():
    assert call_charges_line(3, 1_128_499) == InvoiceLine(CALL_CHARGES, 3, 113, "standard")


@pytest.mark.parametrize("micros", [1.5, Decimal("1.5"), True, "5000"])
def test_call_charges_refuse_anything_but_integer_micros(micros):
    with pytest.raises(MoneyError):
        call_charges_minor(micros)


# --- VAT per rate, rounded once -------------------------------------------------------------


def test_vat_is_rounded_once_per_rate_not_per_line():
    lines = [InvoiceLine(f"Line rental {n}", 1, 1252) for n in range(3)]  # 3 × £12.52 at 20%
    per_line = sum(int((Decimal(line.amount_minor) * Decimal("0.20")).to_integral_value()) for line in lines)
    assert per_line == 750  # 3 × £2.504 → 3 × £2.50
    result = totals(lines)
    assert result.tax_by_rate == {"standard": (3756, 751)}  # 20% of £37.56 is £7.512 → £7.51
    assert (result.net_minor, result.tax_minor, result.total_minor) == (3756, 751, 4507)


def test_vat_rounds_exactly_half_a_penny_up_and_a_negative_half_away_from_zero():
    reduced = tax_rates(TaxRate("reduced", Decimal("0.05")))
    assert totals([InvoiceLine("Energy", 1, 10, "reduced")], reduced).tax_minor == 1  # 0.5p → 1p
    assert totals([InvoiceLine("Energy refund", 1, -10, "reduced")], reduced).tax_minor == -1
    assert totals([InvoiceLine("Energy", 1, 9, "reduced")], reduced).tax_minor == 0  # 0.45p → 0p


def test_zero_rated_and_exempt_lines_carry_no_vat_and_are_listed_apart():
    result = totals([InvoiceLine("Line rental", 1, 1000), InvoiceLine("Directory", 1, 500, "zero"),
                     InvoiceLine("Insurance", 1, 399, "exempt")])
    assert result.tax_by_rate == {"standard": (1000, 200), "zero": (500, 0), "exempt": (399, 0)}
    assert (result.net_minor, result.tax_minor, result.total_minor) == (1899, 200, 2099)


def test_rates_show_as_percent_or_exempt():
    assert [UK_RATES[c].label for c in ("standard", "zero", "exempt")] == ["20%", "0%", "Exempt"]
    assert TaxRate("old", Decimal("0.175")).label == "17.5%"


def test_a_line_with_an_unknown_tax_code_is_refused():
    with pytest.raises(UnknownTaxCodeError, match="'reduced'.*exempt, standard, zero"):
        totals([InvoiceLine("Energy", 1, 100, "reduced")])


@pytest.mark.parametrize("rate", [0.2, Decimal("1"), Decimal("-0.1")])
def test_a_tax_rate_must_be_an_exact_fraction(rate):
    with pytest.raises(MoneyError):
        TaxRate("standard", rate)


def test_an_exempt_rate_cannot_charge_vat():
    with pytest.raises(MoneyError, match="exempt"):
        TaxRate("exempt", Decimal("0.2"), exempt=True)


def test_a_line_amount_must_be_integer_minor_units():
    with pytest.raises(MoneyError):
        InvoiceLine("Line rental", 1, Decimal("12.50"))


def test_an_invoice_with_no_lines_totals_zero():
    result = totals([])
    assert (dict(result.tax_by_rate), result.net_minor, result.tax_minor, result.total_minor) == ({}, 0, 0, 0)


# --- currencies and how figures are shown ---------------------------------------------------------


def test_a_customers_currency_comes_from_the_table_and_an_unknown_one_is_refused():
    assert currency("gbp") is GBP and GBP.exponent == 2
    assert (currency("EUR").symbol, currency("EUR").exponent) == ("€", 2)
    with pytest.raises(UnknownCurrencyError, match="'JPY'"):
        currency("JPY")


@pytest.mark.parametrize("minor, shown", [
    (123456, "£1,234.56"), (-1200, "-£12.00"), (0, "£0.00"), (5, "£0.05"), (-5, "-£0.05"),
    (123456789, "£1,234,567.89"),
])
def test_money_is_shown_with_symbol_thousands_and_a_leading_minus(minor, shown):
    assert display_money(minor, GBP) == shown


def test_euro_amounts_use_the_euro_sign():
    assert display_money(99, currency("EUR")) == "€0.99"


def test_a_period_is_shown_with_its_last_day_inclusive():
    assert display_period(date(2026, 11, 1), date(2026, 12, 1)) == "1 Nov 2026 – 30 Nov 2026"


# --- the document ---------------------------------------------------------------------------


def test_a_document_whose_totals_do_not_match_its_lines_is_refused():
    lines = (InvoiceLine("Line rental", 1, 1000),)
    wrong = totals([InvoiceLine("Line rental", 1, 1001)])
    with pytest.raises(InputError, match="INV-1.*not those of its lines"):
        InvoiceDocument(SELLER, CUSTOMER, "INV-1", date(2026, 12, 1), date(2026, 11, 1), date(2026, 12, 1),
                        lines, wrong, due_date=date(2026, 12, 31))


def test_a_credit_note_must_name_the_invoice_it_credits():
    with pytest.raises(InputError, match="credit note must name"):
        invoice([InvoiceLine("Refund", 1, 1000)], kind="credit note", due_date=None)


def test_an_invoice_needs_a_due_date_and_a_period_that_ends_after_it_starts():
    with pytest.raises(InputError, match="due date"):
        invoice([], due_date=None)
    with pytest.raises(InputError, match="not after"):
        invoice([], period_end=date(2026, 11, 1))


def test_html_escapes_the_customers_name():
    doc = invoice([InvoiceLine("Line rental", 1, 1000)],
                  customer=Customer("EVIL", "<script>alert('x')</script> & Co", ("1 Road",)))
    html = render_html(doc)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; Co" in html


def test_html_shows_the_number_lines_rates_period_and_totals():
    html = render_html(invoice([InvoiceLine("Line rental", 2, 123456), InvoiceLine("Insurance", 1, 399, "exempt")]))
    for shown in ("Invoice INV-000123", "GB123456789", "1 Nov 2026 – 30 Nov 2026", "1 Dec 2026", "31 Dec 2026",
                  "£1,234.56", "£246.91", "Exempt", "Total due", "£1,485.46"):
        assert shown in html, shown


def test_pdf_text_shows_the_number_customer_and_total():
    doc = invoice([call_charges_line(42, 61_234_567), InvoiceLine("Line rental", 1, 1250)],
                  customer=Customer("CAFE", "Café Łukasz & Sons <Ltd>", ("1 Road",)))
    text = pdf_text(render_pdf(doc))
    assert doc.totals.total_minor == 8848  # (£61.23 + £12.50) × 1.2
    for shown in ("INV-000123", "Café Łukasz & Sons <Ltd>", "£88.48", "Total due", "1 Nov 2026 – 30 Nov 2026"):
        assert shown in text, shown


def test_the_same_document_renders_to_the_same_pdf_bytes():
    doc = invoice([InvoiceLine("Line rental", 1, 1250)])
    assert render_pdf(doc) == render_pdf(doc)


def test_a_long_invoice_runs_onto_more_pages_with_its_total_on_the_last():
    doc = invoice([InvoiceLine(f"DDI +44113496{n:04d} rental", 1, 100) for n in range(120)])
    reader = pypdf.PdfReader(io.BytesIO(render_pdf(doc)))
    assert len(reader.pages) > 1
    assert "£144.00" in reader.pages[-1].extract_text()  # 120 × £1.00 + 20% VAT


def test_a_credit_note_shows_its_kind_and_the_invoice_it_credits():
    doc = invoice([InvoiceLine("Refund: line rental charged twice", 1, 1250)], number="CN-000007",
                  kind="credit note", credited_number="INV-000123", due_date=None)
    html, text = render_html(doc), pdf_text(render_pdf(doc))
    for rendered in (html, text):
        assert "Credit note CN-000007" in rendered
        assert "INV-000123" in rendered
        assert "Total credited" in rendered and "£15.00" in rendered
        assert "Due date" not in rendered


# --- the worked example in docs/billing.md ----------------------------------------------------


def doc_table(name: str) -> list[list[str]]:
    """The rows (header and rule left out) of the table between <!-- example:NAME --> markers."""
    text = BILLING_DOC.read_text(encoding="utf-8")
    match = re.search(rf"<!-- example:{name} -->\n(.*?)<!-- /example:{name} -->", text, re.S)
    assert match, f"docs/billing.md has no example:{name} table"
    rows = [[cell.strip() for cell in row.strip().strip("|").split("|")] for row in match[1].strip().splitlines()]
    return rows[2:]


def pounds(shown: str) -> int:
    """'£1,234.56' → 123456, the way the page writes money."""
    assert re.fullmatch(r"-?£[\d,]+\.\d\d", shown), shown
    return int(shown.replace("£", "").replace(",", "").replace(".", ""))


def test_the_worked_example_in_docs_billing_is_what_the_code_computes():
    micros = [to_micros(Decimal(charge)) for _, charge in doc_table("calls")]
    assert micros == [123_450, 50, 1_004_999]
    lines = [call_charges_line(len(micros), sum(micros))] + [
        InvoiceLine(description, int(quantity), pounds(amount), code)
        for description, quantity, amount, code in doc_table("lines")[1:]]
    assert [[line.description, str(line.quantity), display_money(line.amount_minor, GBP), line.tax_code]
            for line in lines] == doc_table("lines")

    result = totals(lines)
    assert {code: (pounds(net), pounds(vat)) for code, net, vat in doc_table("vat")} == result.tax_by_rate
    figures = {figure: pounds(amount) for figure, amount in doc_table("totals")}
    assert figures == {"net": result.net_minor, "VAT": result.tax_minor, "total": result.total_minor}
    assert figures == {"net": 2275, "VAT": 275, "total": 2550}  # written out, to check by hand

    html = render_html(invoice(lines))
    assert all(display_money(v, GBP) in html for v in figures.values())
