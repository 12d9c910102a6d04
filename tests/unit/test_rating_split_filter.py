"""Split-band tariffs walk only the calls that can reach a band boundary or span a clock
change; the pre-filter must never skip a call whose split price differs from its plain price."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from cdrflow.money import from_micros
from services.rater.engine import band_seconds, split_charge
from services.rater.plan import Tariff
from services.rater.schedule import UK_DEFAULT_RULES, Schedule
from tests.unit.rating_helpers import LONDON, call, plan, rate

RATES = "code,peak,offpeak,weekend,peak_setup,offpeak_setup,weekend_setup\n44,0.10,0.05,0.02,0.03,0.02,0.01\n"
SPLIT = Tariff("standard", split_bands=True)
HOLIDAYS = Schedule.from_rules("uk-holidays", UK_DEFAULT_RULES, holidays_as_weekend=True)
YEAR_START = datetime(2026, 1, 1, tzinfo=UTC)


def walked_charge(start: datetime, duration: int, schedule: Schedule) -> Decimal:
    """The reference: every call walked second by second, no pre-filter."""
    row = {"billable_seconds": duration, "peak": 100_000, "offpeak": 50_000, "weekend": 20_000,
           "peak_setup": 30_000, "offpeak_setup": 20_000, "weekend_setup": 10_000, "minimum": 0,
           "places": 4, "rounding": "half-up"}
    return from_micros(split_charge(row, band_seconds(schedule, start, duration, LONDON))).normalize()


calls = st.lists(st.tuples(st.integers(0, 365 * 24 * 3600), st.integers(1, 30 * 3600)), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(calls)
def test_the_prefilter_never_skips_a_call_that_crosses_a_band(offsets_and_durations):
    the_plan = plan(RATES, tariff=SPLIT)
    starts = [YEAR_START + timedelta(seconds=offset) for offset, _ in offsets_and_durations]
    rated = rate(the_plan, *[call(s, d) for s, (_, d) in zip(starts, offsets_and_durations)])
    uk = the_plan.schedules["uk-default"]
    assert [r["charge"] for r in rated] == [walked_charge(s, d, uk) for s, (_, d) in zip(starts, offsets_and_durations)]


@settings(max_examples=30, deadline=None)
@given(calls)
def test_with_holidays_every_midnight_may_be_a_boundary(offsets_and_durations):
    tariff = Tariff("standard", schedule="uk-holidays", split_bands=True)
    the_plan = plan(RATES, tariff=tariff, schedules={"uk-holidays": HOLIDAYS})
    starts = [YEAR_START + timedelta(seconds=offset) for offset, _ in offsets_and_durations]
    rated = rate(the_plan, *[call(s, d) for s, (_, d) in zip(starts, offsets_and_durations)])
    assert [r["charge"] for r in rated] == [walked_charge(s, d, HOLIDAYS)
                                            for s, (_, d) in zip(starts, offsets_and_durations)]


NIGHT = Schedule.from_rules("night", "band,days,start,end\noffpeak,Mon-Sun,00:00,01:30\npeak,Mon-Sun,01:30,24:00\n")


def test_a_call_over_the_autumn_clock_change_is_walked():
    # 01:40 BST on Sunday 25 Oct 2026 for 30 min: 20 min peak to 02:00 BST, then the clock goes
    # back to 01:00 GMT, which is offpeak under this schedule: 10 min offpeak
    start = datetime(2026, 10, 25, 0, 40, tzinfo=UTC)
    tariff = Tariff("standard", schedule="night", split_bands=True)
    [rated] = rate(plan(RATES, tariff=tariff, schedules={"night": NIGHT}), call(start, 1800))
    # 0.03 set-up + 20 × 0.10 + 10 × 0.05 = 2.53
    assert rated["charge"] == walked_charge(start, 1800, NIGHT) == Decimal("2.53")
