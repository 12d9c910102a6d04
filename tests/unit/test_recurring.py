"""Recurring and one-off charges: billed in advance, pro-rated by days at the edges, once.

The numbers of the worked examples in docs/billing-schedules.md are asserted here.
"""

from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdrflow.errors import InputError
from services.invoicer.periods import BillingSchedule, Period, month_period
from services.invoicer.recurring import (
    ChargeLine,
    ChargesDue,
    OneOffCharge,
    RecurringCharge,
    charge_period_containing,
    charges_due,
)

MONTHLY = BillingSchedule.parse("monthly")
WEEKLY = BillingSchedule.parse("weekly")


def d(text: str) -> date:
    return date.fromisoformat(text)


def rental(start: str, end: str | None = None, *, amount: str = "12.00", quantity: int = 2,
           frequency: str = "monthly") -> RecurringCharge:
    return RecurringCharge("Line rental", Decimal(amount), frequency, d(start), d(end) if end else None, quantity)


def week(label: str) -> Period:
    return WEEKLY.period_containing(date.fromisocalendar(int(label[:4]), int(label[6:]), 1))


# --- in advance, and pro-rata at the start ---------------------------------------------------------


def test_a_running_monthly_charge_is_billed_for_the_next_month_at_the_run_closing_this_one():
    due = charges_due(rental("2025-01-01"), MONTHLY, month_period("2026-11"), d("2026-12-01"))
    assert due == ChargesDue((ChargeLine("Line rental 2026-12-01..2026-12-31", 2, 2400, d("2026-12-01"),
                                         d("2027-01-01")),), d("2027-01-01"))


def test_the_first_run_bills_the_rest_of_the_current_month_pro_rata_and_the_next_month_in_full():
    # Example 1: £12.00 a month, 2 lines, from 20 November: 11 of November's 30 days, then December.
    due = charges_due(rental("2026-11-20"), MONTHLY, month_period("2026-11"), None)
    assert [(line.description, line.amount_minor) for line in due.lines] == [
        ("Line rental 2026-11-20..2026-11-30 (11 of 30 days)", 880),
        ("Line rental 2026-12-01..2026-12-31", 2400),
    ]
    assert due.billed_until == d("2027-01-01")
    following = charges_due(rental("2026-11-20"), MONTHLY, month_period("2026-12"), due.billed_until)
    assert [(line.description, line.amount_minor) for line in following.lines] == [
        ("Line rental 2027-01-01..2027-01-31", 2400)]


def test_a_charge_starting_next_month_is_billed_from_its_start_at_this_months_run():
    due = charges_due(rental("2026-12-10"), MONTHLY, month_period("2026-11"), None)
    assert [(line.covered_from, line.covered_to, line.amount_minor) for line in due.lines] == [
        (d("2026-12-10"), d("2027-01-01"), 1703)]  # 22/31 × 24.00 = 17.032…


def test_a_charge_starting_after_the_next_period_waits_for_a_later_run():
    assert charges_due(rental("2027-01-05"), MONTHLY, month_period("2026-11"), None) == ChargesDue((), None)


def test_a_run_closing_an_earlier_period_by_hand_bills_nothing_already_billed():
    assert charges_due(rental("2025-01-01"), MONTHLY, month_period("2026-09"), d("2027-01-01")) == \
        ChargesDue((), d("2027-01-01"))


# --- pro-rata at the end, and the credit of a charge ended after it was billed ---------------------


def test_a_charge_ending_mid_month_is_billed_pro_rata_to_its_end_and_then_no_more():
    charge = rental("2026-11-20", "2027-01-15")
    due = charges_due(charge, MONTHLY, month_period("2026-12"), d("2027-01-01"))
    assert [(line.description, line.amount_minor) for line in due.lines] == [
        ("Line rental 2027-01-01..2027-01-14 (14 of 31 days)", 1084)]  # 14/31 × 24.00 = 10.838…
    assert due.billed_until == d("2027-01-15")
    assert charges_due(charge, MONTHLY, month_period("2027-01"), due.billed_until) == ChargesDue((), d("2027-01-15"))


def test_a_charge_ended_after_it_was_billed_in_advance_is_credited_pro_rata_at_the_next_run():
    # Example 2: January was billed in full (24.00); the charge then ended on 15 January (exclusive).
    charge = rental("2026-11-20", "2027-01-15")
    due = charges_due(charge, MONTHLY, month_period("2027-01"), d("2027-02-01"))
    assert due == ChargesDue((ChargeLine("Credit: Line rental 2027-01-15..2027-01-31 (17 of 31 days), charge ended",
                                         2, -1316, d("2027-01-15"), d("2027-02-01")),), d("2027-01-15"))
    assert 2400 - 1316 == 1084  # the same as billing 14 of 31 days to begin with
    assert charges_due(charge, MONTHLY, month_period("2027-02"), due.billed_until) == ChargesDue((), d("2027-01-15"))


def test_a_credit_spanning_charge_periods_credits_whole_ones_in_full():
    charge = rental("2026-01-01", "2027-02-10", quantity=1)
    due = charges_due(charge, MONTHLY, month_period("2027-02"), d("2027-04-01"))
    assert [(line.covered_from, line.covered_to, line.amount_minor) for line in due.lines] == [
        (d("2027-02-10"), d("2027-03-01"), -814),  # 19/28 × 12.00 = 8.142…
        (d("2027-03-01"), d("2027-04-01"), -1200),
    ]
    assert due.billed_until == d("2027-02-10")


# --- quantity, credits, rounding ------------------------------------------------------------------------


def test_quantity_multiplies_the_amount_per_period():
    due = charges_due(rental("2025-01-01", amount="1.50", quantity=3), MONTHLY, month_period("2026-11"),
                      d("2026-12-01"))
    assert [(line.quantity, line.amount_minor) for line in due.lines] == [(3, 450)]


def test_a_negative_amount_is_a_recurring_credit_pro_rated_like_a_charge():
    discount = RecurringCharge("Loyalty discount", Decimal("-5.00"), "monthly", d("2026-11-20"))
    due = charges_due(discount, MONTHLY, month_period("2026-11"), None)
    assert [line.amount_minor for line in due.lines] == [-183, -500]  # 11/30 × -5.00 = -1.833…


@pytest.mark.parametrize(("amount", "minor"), [("0.125", 13), ("-0.125", -13), ("0.124999", 12)])
def test_an_amount_is_rounded_once_to_the_penny_half_away_from_zero(amount, minor):
    due = charges_due(rental("2025-01-01", amount=amount, quantity=1), MONTHLY, month_period("2026-11"),
                      d("2026-12-01"))
    assert due.lines[0].amount_minor == minor


# --- charge periods laid on the customer's schedule ---------------------------------------------------


def test_a_quarterly_charge_of_a_monthly_customer_is_billed_a_quarter_ahead_then_waits():
    # Example 3: £30.00 a quarter from 20 November.
    support = RecurringCharge("Support", Decimal("30.00"), "quarterly", d("2026-11-20"))
    november = charges_due(support, MONTHLY, month_period("2026-11"), None)
    assert [(line.description, line.amount_minor) for line in november.lines] == [
        ("Support 2026-11-20..2026-12-31 (42 of 92 days)", 1370)]  # 42/92 × 30.00 = 13.695…
    december = charges_due(support, MONTHLY, month_period("2026-12"), november.billed_until)
    assert [(line.description, line.amount_minor) for line in december.lines] == [
        ("Support 2027-01-01..2027-03-31", 3000)]
    for month in ("2027-01", "2027-02"):
        assert charges_due(support, MONTHLY, month_period(month), december.billed_until).lines == ()
    assert charges_due(support, MONTHLY, month_period("2027-03"), december.billed_until).billed_until == d("2027-07-01")


def test_a_monthly_charge_of_a_customer_billed_on_the_15th_runs_from_the_15th():
    schedule = BillingSchedule.parse("monthly:15")
    run = schedule.period_containing(d("2026-11-01"))  # 2026-10-15..2026-11-14
    due = charges_due(rental("2026-11-01", quantity=1), schedule, run, None)
    assert [(line.description, line.amount_minor) for line in due.lines] == [
        ("Line rental 2026-11-01..2026-11-14 (14 of 31 days)", 542),  # 14/31 × 12.00 = 5.419…
        ("Line rental 2026-11-15..2026-12-14", 1200),
    ]


def test_a_monthly_charge_of_a_weekly_customer_is_billed_when_the_next_week_reaches_its_month():
    # Example 4: weekly customer, £12.00 a month from Wednesday 18 November.
    charge = rental("2026-11-18", quantity=1)
    assert charges_due(charge, WEEKLY, week("2026-W42"), None).lines == ()  # next week ends in October
    w43 = charges_due(charge, WEEKLY, week("2026-W43"), None)  # next week (W44) ends on 1 November
    assert [(line.description, line.amount_minor) for line in w43.lines] == [
        ("Line rental 2026-11-18..2026-11-30 (13 of 30 days)", 520)]
    for label in ("2026-W44", "2026-W45", "2026-W46", "2026-W47"):
        assert charges_due(charge, WEEKLY, week(label), w43.billed_until).lines == ()
    w48 = charges_due(charge, WEEKLY, week("2026-W48"), w43.billed_until)  # next week reaches December
    assert [(line.description, line.amount_minor) for line in w48.lines] == [
        ("Line rental 2026-12-01..2026-12-31", 1200)]


def test_a_yearly_charge_is_pro_rated_to_the_year_end_then_billed_a_year_at_a_time():
    domain = RecurringCharge("Domain", Decimal("120.00"), "yearly", d("2026-06-10"))
    may = charges_due(domain, MONTHLY, month_period("2026-05"), None)
    assert [(line.description, line.amount_minor) for line in may.lines] == [
        ("Domain 2026-06-10..2026-12-31 (205 of 365 days)", 6740)]  # 205/365 × 120.00 = 67.397…
    assert charges_due(domain, MONTHLY, month_period("2026-11"), may.billed_until).lines == ()
    december = charges_due(domain, MONTHLY, month_period("2026-12"), may.billed_until)
    assert [(line.covered_from, line.covered_to, line.amount_minor) for line in december.lines] == [
        (d("2027-01-01"), d("2028-01-01"), 12000)]


def test_charge_periods_follow_the_schedules_anchor_day_and_first_month():
    quarterly = BillingSchedule.parse("quarterly:2:15")
    assert charge_period_containing("monthly", quarterly, d("2026-11-14")) == Period(d("2026-10-15"), d("2026-11-15"))
    assert charge_period_containing("quarterly", quarterly, d("2026-11-14")) == Period(d("2026-08-15"),
                                                                                      d("2026-11-15"))
    assert charge_period_containing("yearly", quarterly, d("2026-11-14")) == Period(d("2026-02-15"), d("2027-02-15"))
    assert charge_period_containing("yearly", WEEKLY, d("2026-11-14")) == Period(d("2026-01-01"), d("2027-01-01"))


def test_a_run_for_a_period_that_is_not_the_customers_is_refused():
    with pytest.raises(InputError, match="not a billing period of schedule weekly"):
        charges_due(rental("2026-11-20"), WEEKLY, month_period("2026-11"), None)


# --- one-off charges ---------------------------------------------------------------------------------


def test_a_one_off_charge_is_billed_once_at_the_first_run_whose_period_ends_after_its_day():
    installation = OneOffCharge("Installation", Decimal("99.00"), d("2026-11-20"))
    assert charges_due(installation, MONTHLY, month_period("2026-10"), None) == ChargesDue((), None)
    due = charges_due(installation, MONTHLY, month_period("2026-11"), None)
    assert due == ChargesDue((ChargeLine("Installation 2026-11-20", 1, 9900, d("2026-11-20"), d("2026-11-21")),),
                             d("2026-11-21"))
    assert charges_due(installation, MONTHLY, month_period("2026-12"), due.billed_until).lines == ()
    assert charges_due(installation, MONTHLY, month_period("2026-11"), due.billed_until).lines == ()


def test_a_one_off_charge_on_a_periods_end_day_belongs_to_the_next_period():
    router = OneOffCharge("Router", Decimal("45.50"), d("2026-12-01"), quantity=2)
    assert charges_due(router, MONTHLY, month_period("2026-11"), None).lines == ()
    assert [line.amount_minor for line in charges_due(router, MONTHLY, month_period("2026-12"), None).lines] == [9100]


# --- refused charges --------------------------------------------------------------------------------


@pytest.mark.parametrize("end", ["2026-11-19", "2026-11-20"])
def test_a_charge_ending_before_or_as_it_starts_is_refused(end):
    with pytest.raises(InputError, match="ends on .*, not after it starts on 2026-11-20"):
        rental("2026-11-20", end)


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"frequency": "weekly"}, "frequency 'weekly' is not one of monthly, quarterly, yearly"),
    ({"amount": 12.0}, "is not a finite Decimal"),
    ({"amount": Decimal("NaN")}, "is not a finite Decimal"),
    ({"quantity": 0}, "quantity 0 is not a whole number of at least 1"),
    ({"quantity": -1}, "a credit is a negative amount"),
    ({"description": "  "}, "a charge needs a description"),
])
def test_a_charge_that_cannot_be_billed_is_refused(kwargs, says):
    fields = {"description": "Line rental", "amount": Decimal("12.00"), "frequency": "monthly",
              "start": d("2026-11-20")} | kwargs
    with pytest.raises(InputError) as error:
        RecurringCharge(**fields)
    assert says in str(error.value)


# --- properties ----------------------------------------------------------------------------------------

schedules = st.one_of(
    st.builds(BillingSchedule.weekly, st.integers(0, 6)),
    st.builds(BillingSchedule.monthly, st.integers(1, 28)),
    st.builds(BillingSchedule.quarterly, st.integers(1, 3), st.integers(1, 28)),
)
charges = st.builds(
    lambda frequency, start, days, cents, quantity: RecurringCharge(
        "Rental", Decimal(cents).scaleb(-2), frequency, start, start + timedelta(days=days) if days else None,
        quantity),
    st.sampled_from(["monthly", "quarterly", "yearly"]),
    st.dates(date(2024, 1, 1), date(2028, 12, 31)),
    st.one_of(st.none(), st.integers(1, 900)),
    st.integers(-100_000, 100_000),
    st.integers(1, 5),
)


def runs(schedule: BillingSchedule, first: date, count: int) -> list[Period]:
    periods = [schedule.period_containing(first)]
    while len(periods) < count:
        periods.append(schedule.next_period(periods[-1]))
    return periods


@settings(max_examples=300, deadline=None)
@given(schedules, charges)
def test_consecutive_runs_bill_every_day_of_a_charge_once_in_advance(schedule, charge):
    billed_until, lines = None, []
    horizon = (charge.end or charge.start + timedelta(days=400)) + timedelta(days=400)
    for period in runs(schedule, charge.start - timedelta(days=100), 300):
        if period.start > horizon:
            break
        due = charges_due(charge, schedule, period, billed_until)
        lines += due.lines
        billed_until = due.billed_until
        following = schedule.next_period(period)
        if charge.start < following.end:  # started by the end of the next period: billed through it
            assert billed_until >= (following.end if charge.end is None else min(following.end, charge.end))
    assert lines and all(line.amount_minor * charge.amount >= 0 for line in lines)  # no credit without an end change
    assert lines[0].covered_from == charge.start
    assert all(a.covered_to == b.covered_from for a, b in zip(lines, lines[1:], strict=False))  # no gap, no overlap
    if charge.end is not None:
        assert lines[-1].covered_to == charge.end == billed_until
    full = int((charge.amount * charge.quantity * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    for line in lines:
        grid = charge_period_containing(charge.frequency, schedule, line.covered_from)
        if (line.covered_from, line.covered_to) == (grid.start, grid.end):
            assert line.amount_minor == full
        else:  # pro-rata only at the charge's edges
            assert charge.start > grid.start or (charge.end is not None and charge.end < grid.end)


@settings(max_examples=300, deadline=None)
@given(schedules, charges, st.integers(0, 10_000))
def test_ending_a_charge_after_billing_credits_exactly_the_days_after_its_end(schedule, charge, pick):
    open_ended = RecurringCharge(charge.description, charge.amount, charge.frequency, charge.start, None,
                                 charge.quantity)
    period = schedule.period_containing(charge.start + timedelta(days=pick % 200))
    billed_until = charges_due(open_ended, schedule, period, None).billed_until
    span = (billed_until - charge.start).days
    end = charge.start + timedelta(days=1 + pick % span)
    ended = RecurringCharge(charge.description, charge.amount, charge.frequency, charge.start, end, charge.quantity)
    due = charges_due(ended, schedule, schedule.next_period(period), billed_until)
    if end == billed_until:
        assert due == ChargesDue((), billed_until)
        return
    assert due.billed_until == end
    assert due.lines[0].covered_from == end and due.lines[-1].covered_to == billed_until
    assert all(a.covered_to == b.covered_from for a, b in zip(due.lines, due.lines[1:], strict=False))
    assert all(line.amount_minor * charge.amount <= 0 and line.description.startswith("Credit: ")
               for line in due.lines)
