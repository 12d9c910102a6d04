from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from cdrflow.errors import InputError
from services.dedupe.decision import Accepted, Held, decide
from services.invoicer.invoice import InvoiceCall, call_charges_total, calls_csv
from services.invoicer.periods import month_period

LONDON = ZoneInfo("Europe/London")


def test_a_month_period_ends_exclusive_on_the_first_of_the_next_month():
    assert (month_period("2026-12").start, month_period("2026-12").end) == (date(2026, 12, 1), date(2027, 1, 1))


def test_october_in_london_starts_in_bst_and_ends_in_gmt():
    start, end = month_period("2026-10").utc_bounds(LONDON)
    assert start == datetime(2026, 9, 30, 23, 0, tzinfo=UTC)
    assert end == datetime(2026, 11, 1, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize("label", ["2026-13", "26-10", "October", "2026-1"])
def test_a_bad_period_is_refused(label):
    with pytest.raises(InputError, match="YYYY-MM"):
        month_period(label)


def test_invoice_total_is_the_sum_of_rounded_call_charges():
    t = datetime(2026, 10, 1, tzinfo=UTC)
    calls = [InvoiceCall("f", n, "c", "1", "2", t, 1, Decimal("0.0003")) for n in range(3)]
    assert call_charges_total(calls) == Decimal("0.0009")
    assert call_charges_total([]) == Decimal(0)


def test_calls_csv_lists_calls_in_time_order_in_the_operators_zone():
    early = InvoiceCall("f", 3, "gamma", "441", "442", datetime(2026, 10, 1, 8, tzinfo=UTC), 60, Decimal("0.015"))
    late = InvoiceCall("f", 2, "gamma", "441", "442", datetime(2026, 10, 2, 8, tzinfo=UTC), 60, Decimal("0.015"))
    text = calls_csv([late, early], LONDON).decode()
    assert text.splitlines() == [
        "file_id,row,carrier,cli,dialled,start,duration,charge",
        "f,3,gamma,441,442,2026-10-01T09:00:00+01:00,60,0.0150",
        "f,2,gamma,441,442,2026-10-02T09:00:00+01:00,60,0.0150",
    ]


def test_new_content_is_accepted_and_seen_content_is_held_with_every_earlier_file():
    assert decide([]) == Accepted()
    held = decide(["a", "b"])
    assert held == Held(("a", "b")) and "2 earlier file(s)" in held.reason
