"""Every CSV written for people is safe in a spreadsheet: a cell that could run as a formula
gets a quote in front, a number stays a number (rules in ``cdrflow.csvsafe``)."""

import csv
import io
import re
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from cdrflow_app.cli import main
from cdrflow.csvsafe import SafeWriter, safe_cell, safe_frame
from services.invoicer.invoice import InvoiceCall, calls_csv
from services.parser.api import parse_stream
from services.parser.output import write_csv
from tests.unit.test_rate_cli import RATES

EVIL = '=HYPERLINK("http://evil","x")'
EVIL_IN_CSV = '"=HYPERLINK(""http://evil"",""x"")"'  # EVIL as one CSV field of an input file


@pytest.mark.parametrize("cell", ["=1+1", "+SUM(A1)", "-2+3", "@SUM(A1)", "\tcmd", "\rcmd", EVIL])
def test_a_cell_starting_with_a_formula_character_gets_a_quote(cell):
    assert safe_cell(cell) == "'" + cell


@pytest.mark.parametrize("cell", ["-12.3400", "-5", "+441234567890", "+0.5", "0", "12.5"])
def test_a_decimal_number_is_left_as_it_is(cell):
    assert safe_cell(cell) == cell


@pytest.mark.parametrize("cell", ["-", "+", "-.5", "-5.", "-1e3", "+44 20 7946 0000", "-5 ", "-5\n", "-5\n=1",
                                  "-٣"])
def test_a_signed_cell_that_is_not_entirely_a_decimal_number_gets_a_quote(cell):
    assert safe_cell(cell) == "'" + cell


@pytest.mark.parametrize("cell", ["", "ACME", "0.0150", "a=b", " =1"])
def test_empty_and_ordinary_cells_are_left_as_they_are(cell):
    assert safe_cell(cell) == cell


def _plain_rule(cell: str) -> bool:
    """The module docstring's rule written the obvious way, to check the one-pattern version against."""
    return cell[:1] in ("=", "+", "-", "@", "\t", "\r") and not re.fullmatch(r"[+-]?[0-9]+(\.[0-9]+)?", cell)


cells = st.text(alphabet=st.sampled_from("=+-@\t\r\n.0123456789 x٣"), max_size=8)


@given(cells)
def test_safe_cell_follows_the_plain_rule(cell):
    assert safe_cell(cell) == ("'" + cell if _plain_rule(cell) else cell)


@given(st.lists(cells, min_size=1, max_size=20))
def test_safe_frame_quotes_exactly_the_cells_safe_cell_quotes(column):
    frame = pl.DataFrame({"text": column})
    assert safe_frame(frame)["text"].to_list() == [safe_cell(c) for c in column]


def test_safe_frame_leaves_numeric_columns_times_and_nulls_alone():
    frame = pl.DataFrame({"text": ["=1", None], "n": [-5, 3], "at": [datetime(2026, 10, 1), None]})
    assert safe_frame(frame).to_dict(as_series=False) == {"text": ["'=1", None], "n": [-5, 3],
                                                          "at": [datetime(2026, 10, 1), None]}


def test_safe_writer_quotes_string_cells_and_writes_other_values_as_csv_writer_does():
    out = io.StringIO()
    SafeWriter(out, lineterminator="\n").writerows([[EVIL, -5, None, "-0.0100"]])
    assert out.getvalue() == "\"'=HYPERLINK(\"\"http://evil\"\",\"\"x\"\")\",-5,,-0.0100\n"


def _cells(text: str) -> list[list[str]]:
    """What a spreadsheet (or anyone) reading the CSV gets: the quote survives the CSV quoting."""
    return list(csv.reader(io.StringIO(text, newline="")))


def test_parse_output_quotes_a_formula_from_the_carriers_file():
    cdrs = ("cli,dialled,start,duration,cost,charge_code,account_code\n"
            f"+441632960001,01174960123,2026-10-01T09:15:00,125,0.0030,{EVIL_IN_CSV},ACME\n")
    batches = parse_stream(io.BytesIO(cdrs.encode()), "generic-cdr", name="evil.csv", zone=ZoneInfo("UTC"))
    out = io.StringIO()
    write_csv(batches, out)
    header, row = _cells(out.getvalue())
    cell = dict(zip(header, row, strict=True))
    assert (cell["cli"], cell["charge_code"], cell["account_code"]) == ("+441632960001", "'" + EVIL, "ACME")


def test_rate_output_quotes_a_formula_from_the_customers_file_and_keeps_numbers(tmp_path):
    (tmp_path / "rates.csv").write_text(RATES)
    (tmp_path / "cdrs.csv").write_text("cli,dialled,start,duration,cost\n"
                                       "+441632960001,01174960123,2026-10-06T10:00:00,120,\n")
    (tmp_path / "customers.csv").write_text(f"customer,cli\n{EVIL_IN_CSV},+441632960001\n")
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(main, ["rate", "--rates", str(tmp_path / "rates.csv"), "--customers",
                                       str(tmp_path / "customers.csv"), str(tmp_path / "cdrs.csv"), "-o", str(out)],
                                env={"CDRFLOW_DATA_DIR": str(tmp_path / "data")})
    assert result.exit_code == 0, result.output
    header, row = _cells(out.read_text())
    cell = dict(zip(header, row, strict=True))
    assert (cell["cli"], cell["customer"], cell["charge"]) == ("441632960001", "'" + EVIL, "0.0300")


def test_invoice_call_list_quotes_a_formula_and_keeps_a_credit_numeric():
    call = InvoiceCall(datetime(2026, 10, 1, 8, tzinfo=UTC), EVIL, "+441632960002", "UK", "peak", 60, 60,
                       Decimal("-0.0150"))
    header, row = _cells(calls_csv([call], ZoneInfo("Europe/London")).decode())
    assert row == ["2026-10-01", "09:00:00", "'" + EVIL, "+441632960002", "UK", "peak", "60", "60", "-0.0150"]
