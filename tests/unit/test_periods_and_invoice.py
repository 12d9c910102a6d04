from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from cdrflow.errors import InputError
from services.dedupe.decision import Accepted, Held, decide
from services.invoicer.invoice import InvoiceCall, calls_csv
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


def test_calls_csv_shows_each_call_in_the_operators_zone_in_the_order_given():
    summer = InvoiceCall(datetime(2026, 10, 1, 8, tzinfo=UTC), "441", "442", "UK Mobile", "peak", 61, 120,
                         Decimal("0.040000"))
    winter = InvoiceCall(datetime(2026, 11, 2, 8, tzinfo=UTC), "441", "33", None, None, 5, None, Decimal("0.123450"))
    text = calls_csv([summer, winter], LONDON).decode()
    assert text.splitlines() == [
        "Date,Time,CLI,Dialled number,Destination,Band,Duration (s),Billable seconds,Charge",
        "2026-10-01,09:00:00,441,442,UK Mobile,peak,61,120,0.0400",  # BST: UTC+1
        "2026-11-02,08:00:00,441,33,,,5,,0.12345",  # GMT; a charge finer than 4 places keeps them
    ]


def test_new_content_is_accepted_and_seen_content_is_held_with_every_earlier_file():
    assert decide([]) == Accepted()
    held = decide(["a", "b"])
    assert held == Held(("a", "b")) and "2 earlier file(s)" in held.reason
