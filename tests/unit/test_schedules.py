"""Billing schedules: how a customer's time is cut into periods, labelled, parsed and closed."""

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdrflow.errors import InputError
from services.invoicer.periods import (
    BillingSchedule,
    Period,
    closable_periods,
    month_period,
    parse_period,
)

LONDON = ZoneInfo("Europe/London")
MONTHLY = BillingSchedule.parse("monthly")
HOUR = timedelta(hours=1)


def p(start: str, end: str) -> Period:
    return Period(date.fromisoformat(start), date.fromisoformat(end))


# --- the schedule's text -----------------------------------------------------------------


@pytest.mark.parametrize(("text", "schedule", "canonical"), [
    ("monthly", BillingSchedule.monthly(1), "monthly"),
    ("monthly:1", BillingSchedule.monthly(1), "monthly"),
    ("Monthly:15", BillingSchedule.monthly(15), "monthly:15"),
    ("monthly:28", BillingSchedule.monthly(28), "monthly:28"),
    ("weekly", BillingSchedule.weekly(0), "weekly"),
    ("weekly:mon", BillingSchedule.weekly(0), "weekly"),
    ("weekly:Friday", BillingSchedule.weekly(4), "weekly:fri"),
    (" weekly : sun ", BillingSchedule.weekly(6), "weekly:sun"),
    ("quarterly", BillingSchedule.quarterly(1), "quarterly"),
    ("quarterly:2", BillingSchedule.quarterly(2), "quarterly:2"),
    ("quarterly:may", BillingSchedule.quarterly(2), "quarterly:2"),
    ("quarterly:december:28", BillingSchedule.quarterly(3, 28), "quarterly:3:28"),
    ("quarterly:1:15", BillingSchedule.quarterly(1, 15), "quarterly:1:15"),
])
def test_schedule_text_is_read_and_written_back_in_its_canonical_form(text, schedule, canonical):
    assert BillingSchedule.parse(text) == schedule
    assert str(schedule) == canonical
    assert BillingSchedule.parse(canonical) == schedule


@pytest.mark.parametrize(("text", "says"), [
    ("fortnightly", "weekly[:DAY]"),
    ("", "is not understood"),
    ("monthly:15:2", "is not understood"),
    ("weekly:1", "is not a weekday; use mon, tue"),
    ("weekly:funday", "is not a weekday"),
    ("monthly:29", "is not a day 1-28"),
    ("monthly:0", "is not a day 1-28"),
    ("monthly:last", "is not a day 1-28"),
    ("quarterly:4", "use 1 (quarters start in Jan, Apr, Jul, Oct)"),
    ("quarterly:2:31", "is not a day 1-28"),
])
def test_a_bad_schedule_is_refused_saying_what_is_wrong_and_what_is_accepted(text, says):
    with pytest.raises(InputError, match=r"billing schedule .*") as error:
        BillingSchedule.parse(text)
    assert says in str(error.value)


def test_a_schedule_with_a_field_of_another_kind_is_refused():
    with pytest.raises(InputError, match="does not fit a weekly schedule"):
        BillingSchedule("weekly", day=15)
    with pytest.raises(InputError, match="does not fit a monthly schedule"):
        BillingSchedule("monthly", month=2)


# --- periods of each kind ---------------------------------------------------------------


def test_monthly_periods_are_calendar_months_labelled_yyyy_mm():
    period = MONTHLY.period_containing(date(2026, 11, 30))
    assert period == p("2026-11-01", "2026-12-01") and period.label == "2026-11"
    assert period == month_period("2026-11")


def test_monthly_on_the_15th_runs_to_the_14th_of_the_next_month_labelled_by_its_days():
    schedule = BillingSchedule.parse("monthly:15")
    assert schedule.period_containing(date(2026, 11, 14)) == p("2026-10-15", "2026-11-15")
    period = schedule.period_containing(date(2026, 11, 15))
    assert period == p("2026-11-15", "2026-12-15") and period.label == "2026-11-15..2026-12-14"


def test_monthly_on_the_28th_has_a_period_through_february_and_across_the_year_end():
    schedule = BillingSchedule.parse("monthly:28")
    assert schedule.period_containing(date(2027, 3, 1)) == p("2027-02-28", "2027-03-28")
    assert schedule.period_containing(date(2027, 2, 27)) == p("2027-01-28", "2027-02-28")
    assert schedule.period_containing(date(2026, 12, 31)) == p("2026-12-28", "2027-01-28")
    assert schedule.period_containing(date(2027, 1, 27)).days == 31


def test_weekly_periods_start_on_their_weekday_and_monday_weeks_are_iso_weeks():
    assert BillingSchedule.parse("weekly").period_containing(date(2026, 11, 22)).label == "2026-W47"
    friday = BillingSchedule.parse("weekly:fri").period_containing(date(2026, 11, 19))  # a Thursday
    assert friday == p("2026-11-13", "2026-11-20") and friday.label == "2026-11-13..2026-11-19"


def test_weekly_periods_across_the_year_end_take_the_iso_year():
    weekly = BillingSchedule.parse("weekly")
    assert weekly.period_containing(date(2027, 1, 3)) == p("2026-12-28", "2027-01-04")
    assert weekly.period_containing(date(2027, 1, 3)).label == "2026-W53"
    assert weekly.period_containing(date(2027, 1, 4)).label == "2027-W01"
    assert BillingSchedule.parse("weekly:sun").period_containing(date(2027, 1, 1)).label == "2026-12-27..2027-01-02"


def test_quarterly_periods_follow_the_anchor_month_across_the_year_end():
    calendar = BillingSchedule.parse("quarterly").period_containing(date(2026, 12, 31))
    assert calendar == p("2026-10-01", "2027-01-01") and calendar.label == "2026-Q4"
    assert BillingSchedule.parse("quarterly:2").period_containing(date(2027, 1, 31)) == p("2026-11-01", "2027-02-01")
    assert BillingSchedule.parse("quarterly:3").period_containing(date(2027, 2, 28)) == p("2026-12-01", "2027-03-01")
    assert BillingSchedule.parse("quarterly:2").period_containing(date(2027, 1, 31)).label == "2026-11-01..2027-01-31"


def test_quarterly_with_an_anchor_day_starts_on_that_day_of_the_quarters_first_month():
    schedule = BillingSchedule.parse("quarterly:1:15")
    assert schedule.period_containing(date(2027, 1, 14)) == p("2026-10-15", "2027-01-15")
    assert schedule.period_containing(date(2027, 1, 15)) == p("2027-01-15", "2027-04-15")


def test_next_period_refuses_a_period_that_is_not_the_schedules():
    assert MONTHLY.next_period(month_period("2026-12")) == month_period("2027-01")
    with pytest.raises(InputError, match="not a billing period of schedule monthly:15"):
        BillingSchedule.parse("monthly:15").next_period(month_period("2026-12"))


def test_a_period_must_end_after_it_starts():
    with pytest.raises(InputError, match="must end after it starts"):
        p("2026-11-01", "2026-11-01")


# --- clock changes -----------------------------------------------------------------------


def test_a_london_week_across_the_october_clock_change_lasts_169_hours():
    start, end = BillingSchedule.parse("weekly").period_containing(date(2026, 10, 25)).utc_bounds(LONDON)
    assert (start, end) == (datetime(2026, 10, 18, 23, tzinfo=UTC), datetime(2026, 10, 26, 0, tzinfo=UTC))
    assert end - start == 169 * HOUR


def test_a_london_week_across_the_march_clock_change_lasts_167_hours():
    start, end = BillingSchedule.parse("weekly").period_containing(date(2027, 3, 28)).utc_bounds(LONDON)
    assert (start, end) == (datetime(2027, 3, 22, 0, tzinfo=UTC), datetime(2027, 3, 28, 23, tzinfo=UTC))
    assert end - start == 167 * HOUR


def test_a_quarter_starting_in_summer_time_and_ending_in_winter_time_gains_an_hour():
    start, end = BillingSchedule.parse("quarterly:2").period_containing(date(2026, 9, 1)).utc_bounds(LONDON)
    assert (start, end) == (datetime(2026, 7, 31, 23, tzinfo=UTC), datetime(2026, 11, 1, 0, tzinfo=UTC))


# --- periods given by hand ------------------------------------------------------------------


@pytest.mark.parametrize(("text", "schedule", "period"), [
    ("2026-11", "monthly", p("2026-11-01", "2026-12-01")),
    ("2026-11-01", "monthly", p("2026-11-01", "2026-12-01")),
    ("2026-11-15", "monthly:15", p("2026-11-15", "2026-12-15")),
    ("2026-11-15..2026-12-14", "monthly:15", p("2026-11-15", "2026-12-15")),
    ("2026-w53", "weekly", p("2026-12-28", "2027-01-04")),
    ("2026-12-27", "weekly:sun", p("2026-12-27", "2027-01-03")),
    ("2026-Q4", "quarterly", p("2026-10-01", "2027-01-01")),
    ("2026-11-01", "quarterly:2", p("2026-11-01", "2027-02-01")),
])
def test_a_period_given_by_hand_is_its_label_or_its_first_day(text, schedule, period):
    assert parse_period(text, BillingSchedule.parse(schedule)) == period


@pytest.mark.parametrize(("text", "schedule", "says"), [
    ("2026-11", "monthly:15", "2026-11 overlaps 2026-10-15..2026-11-14 (first day 2026-10-15) and "
                              "2026-11-15..2026-12-14 (first day 2026-11-15)"),
    ("2026-11-14", "monthly:15", "is not the first day of a period of schedule monthly:15: monthly periods run "
                                 "from day 15 of a month to day 14 of the next; 2026-11-14 is in "
                                 "2026-10-15..2026-11-14"),
    ("2026-W47", "weekly:sun", "weekly periods start on Sunday"),
    ("2026-Q1", "quarterly:2", "quarterly periods start on day 1 of Feb, May, Aug, Nov"),
    ("2026-11-01..2026-11-30", "weekly", "is not a period of schedule weekly"),
    ("November", "monthly", "give the period's first day YYYY-MM-DD, or its label: YYYY-MM"),
    ("2026-13", "monthly", "is not understood"),
    ("2026-02-30", "monthly", "names a day that does not exist"),
    ("2026-W54", "weekly", "names a day that does not exist"),
    ("2026-12-14..2026-11-15", "monthly:15", "ends before it starts"),
])
def test_a_period_given_by_hand_that_is_not_one_of_the_schedules_is_refused(text, schedule, says):
    with pytest.raises(InputError) as error:
        parse_period(text, BillingSchedule.parse(schedule))
    assert says in str(error.value)


# --- closing periods -----------------------------------------------------------------------


def test_a_period_is_closable_exactly_at_its_end_plus_the_grace_and_not_a_microsecond_before():
    end_of_october = datetime(2026, 11, 1, 0, tzinfo=UTC)  # midnight in London, GMT again
    at = end_of_october + timedelta(hours=24)
    assert closable_periods(MONTHLY, date(2026, 10, 1), at, LONDON)[-1] == month_period("2026-10")
    assert closable_periods(MONTHLY, date(2026, 10, 1), at - timedelta(microseconds=1), LONDON) == []


def test_a_summer_period_ends_at_local_midnight_which_is_2300_utc():
    end_of_june = datetime(2026, 6, 30, 23, tzinfo=UTC)
    assert closable_periods(MONTHLY, None, end_of_june, LONDON, grace=timedelta(0)) == [month_period("2026-06")]
    assert closable_periods(MONTHLY, None, end_of_june - timedelta(seconds=1), LONDON,
                            grace=timedelta(0)) == [month_period("2026-05")]


def test_the_grace_is_elapsed_time_even_when_now_is_given_in_local_time_across_a_clock_change():
    weekly = BillingSchedule.parse("weekly")
    # 2026-W42 ends at 00:00 BST on Monday 19 October (23:00 UTC on the 18th); the clocks go back
    # on the 25th, so seven days of grace end at 23:00 GMT on the 25th, not at midnight.
    at = datetime(2026, 10, 25, 23, 0, tzinfo=LONDON)
    week = timedelta(days=7)
    assert closable_periods(weekly, None, at, LONDON, grace=week) == [p("2026-10-12", "2026-10-19")]
    assert closable_periods(weekly, None, at - timedelta(microseconds=1), LONDON, grace=week)[-1].label == "2026-W41"


def test_closable_periods_start_with_the_one_containing_since_and_come_in_order():
    now = datetime(2027, 1, 10, 12, tzinfo=UTC)
    assert closable_periods(MONTHLY, date(2026, 10, 20), now, LONDON) == [
        month_period("2026-10"), month_period("2026-11"), month_period("2026-12")]
    assert closable_periods(MONTHLY, date(2026, 12, 1), now, LONDON) == [month_period("2026-12")]


def test_nothing_is_closable_before_the_first_period_since_has_ended():
    now = datetime(2026, 11, 1, 12, tzinfo=UTC)  # October ended 12 hours ago: still in its grace
    assert closable_periods(MONTHLY, date(2026, 10, 20), now, LONDON) == []
    assert closable_periods(MONTHLY, date(2027, 1, 1), now, LONDON) == []


def test_closable_periods_refuse_a_naive_now_and_a_negative_grace():
    with pytest.raises(ValueError, match="timezone-aware"):
        closable_periods(MONTHLY, None, datetime(2026, 11, 2), LONDON)
    with pytest.raises(ValueError, match="negative"):
        closable_periods(MONTHLY, None, datetime(2026, 11, 2, tzinfo=UTC), LONDON, grace=-HOUR)


# --- properties ----------------------------------------------------------------------------

schedules = st.one_of(
    st.builds(BillingSchedule.weekly, st.integers(0, 6)),
    st.builds(BillingSchedule.monthly, st.integers(1, 28)),
    st.builds(BillingSchedule.quarterly, st.integers(1, 3), st.integers(1, 28)),
)
days = st.dates(date(1990, 1, 1), date(2100, 12, 31))


@settings(max_examples=500, deadline=None)
@given(schedules, days)
def test_consecutive_periods_tile_time_with_no_gap_and_no_overlap(schedule, day):
    period = schedule.period_containing(day)
    assert period.start <= day < period.end
    following = schedule.next_period(period)
    assert following.start == period.end  # no gap, no overlap, in dates …
    assert following.utc_bounds(LONDON)[0] == period.utc_bounds(LONDON)[1]  # … and in instants
    assert schedule.period_containing(period.last_day) == period == schedule.period_containing(period.start)
    assert schedule.previous_period(following) == period
    assert following.label != period.label


@settings(max_examples=300, deadline=None)
@given(schedules, days)
def test_a_schedule_and_its_periods_read_back_from_their_text(schedule, day):
    assert BillingSchedule.parse(str(schedule)) == schedule
    assert len(str(schedule)) <= 16  # customers.billing_schedule is String(16)
    period = schedule.period_containing(day)
    assert parse_period(period.label, schedule) == period
    assert parse_period(period.start.isoformat(), schedule) == period


@settings(max_examples=200, deadline=None)
@given(schedules, days, st.integers(0, 72 * 3600))
def test_closable_periods_have_ended_plus_the_grace_and_the_next_one_has_not(schedule, day, grace_seconds):
    grace = timedelta(seconds=grace_seconds)
    now = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=13)
    since = day - timedelta(days=200)
    periods = closable_periods(schedule, since, now, LONDON, grace)
    for period in periods:
        assert period.utc_bounds(LONDON)[1] + grace <= now
    after = schedule.next_period(periods[-1]) if periods else schedule.period_containing(since)
    assert after.utc_bounds(LONDON)[1] + grace > now
    assert all(a.end == b.start for a, b in zip(periods, periods[1:], strict=False))
