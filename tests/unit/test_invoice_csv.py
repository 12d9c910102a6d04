"""The invoice calls CSV written for a whole billing run at once (``calls_csvs``, polars) is the
CSV ``calls_csv`` writes call by call, byte for byte: times in the operator's zone across the
clock changes, charges at 4 places or more, credits, missing values, cells a spreadsheet could
run, and text that needs CSV quoting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from cdrflow.money import from_micros
from services.invoicer.invoice import CALL_FRAME_SCHEMA, InvoiceCall, calls_csv, calls_csvs

LONDON = ZoneInfo("Europe/London")
TEXT = st.sampled_from(["", "+441632960001", "=HYPERLINK(\"http://x\",\"y\")", "-5", "-5 ", "@sum", "a,b",
                        'say "hi"', "line\nbreak", "\tx", "UK Mobile", "Zürich", "+", "-1.5"])


def calls_of(text):
    return st.tuples(
        st.integers(1, 4),  # invoice id
        st.datetimes(min_value=datetime(2026, 3, 28), max_value=datetime(2026, 10, 26), timezones=st.just(UTC)),
        text, text, st.one_of(st.none(), text), st.one_of(st.none(), text),
        st.integers(0, 100_000), st.one_of(st.none(), st.integers(0, 100_000)),
        st.one_of(st.none(), st.integers(-10_000_000, 10_000_000)))


CALL = calls_of(TEXT)


def one_by_one(rows: list[tuple]) -> dict[int, bytes]:
    out: dict[int, list[InvoiceCall]] = {}
    for invoice_id, start, cli, dialled, destination, band, duration, billable, micros in rows:
        charge = None if micros is None else from_micros(micros)
        out.setdefault(invoice_id, []).append(
            InvoiceCall(start, cli, dialled, destination, band, duration, billable, charge))
    return {invoice_id: calls_csv(calls, LONDON) for invoice_id, calls in out.items()}


@settings(max_examples=200, deadline=None)
@given(st.lists(CALL, max_size=30))
def test_the_run_writes_each_invoice_csv_as_the_call_by_call_writer_does(rows):
    rows.sort(key=lambda r: r[0])
    frame = pl.DataFrame(rows, schema=CALL_FRAME_SCHEMA, orient="row")
    assert calls_csvs(frame, LONDON) == one_by_one(rows)


def test_times_are_local_and_charges_keep_their_places():
    rows = [(7, datetime(2026, 3, 29, 0, 59, 59, tzinfo=UTC), "+441632960001", "=1+1", None, "", 61, 61, 31_300),
            (7, datetime(2026, 3, 29, 1, 0, tzinfo=UTC), "-x", "+44 20", "UK", "p", 5, None, -123_450),
            (7, datetime(2026, 10, 25, 1, 30, tzinfo=UTC) - timedelta(hours=1), "a", "b", "c", "d", 1, 1, None)]
    frame = pl.DataFrame(rows, schema=CALL_FRAME_SCHEMA, orient="row")
    text = calls_csvs(frame, LONDON)[7].decode()
    assert text.splitlines()[1:] == [
        "2026-03-29,00:59:59,+441632960001,'=1+1,,,61,61,0.0313",  # GMT, then BST from 01:00 UTC
        "2026-03-29,02:00:00,'-x,'+44 20,UK,p,5,,-0.12345",
        "2026-10-25,01:30:00,a,b,c,d,1,1,",  # 00:30 UTC is 01:30 BST, the first of two 01:30s
    ]
    assert Decimal("0.0313") == from_micros(31_300)


@settings(max_examples=200, deadline=None)
@given(st.lists(calls_of(TEXT.filter(lambda t: "\n" not in t)), max_size=30))
def test_one_line_rows_cut_from_one_csv_of_the_whole_run_are_each_invoices_csv(rows):
    rows.sort(key=lambda r: r[0])
    frame = pl.DataFrame(rows, schema=CALL_FRAME_SCHEMA, orient="row")
    assert calls_csvs(frame, LONDON) == one_by_one(rows)
