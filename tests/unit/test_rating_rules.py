"""One named test per rating rule, with the arithmetic written out."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from services.rater.plan import Tariff
from services.rater.schedule import Schedule
from tests.unit.rating_helpers import call, plan, rate, rate_one

MON_9 = datetime(2026, 10, 5, 9, 0)  # a Monday, peak
MON_19 = datetime(2026, 10, 5, 19, 0)  # offpeak
SAT_NOON = datetime(2026, 10, 10, 12, 0)  # weekend


def sheet(peak="0.10", offpeak="0.05", weekend="0.02", setup="0", minimum="0", increments="1/1", code="44"):
    return (f"code,destination,peak,offpeak,weekend,setup,minimum,increments\n"
            f"{code},UK,{peak},{offpeak},{weekend},{setup},{minimum},{increments}\n")


def charge(rates: str, duration: int, start=MON_9, **kw) -> Decimal:
    return rate_one(plan(rates, **{k: v for k, v in kw.items() if k == "tariff"}), call(start, duration))["charge"]


# --- billing increments ----------------------------------------------------------------

def test_60_60_increment_bills_120s_for_61s():
    assert charge(sheet(increments="60/60"), 61) == Decimal("0.2")  # 120 s × 0.10/60


def test_1_1_increment_bills_each_second_rounded_once():
    assert charge(sheet(increments="1/1"), 61) == Decimal("0.1017")  # 61 × 0.10/60 = 0.101666…


def test_30_6_increment_bills_36s_for_32s():
    [r] = rate(plan(sheet(increments="30/6")), call(MON_9, 32))
    assert (r["billable_seconds"], r["charge"]) == (36, Decimal("0.06"))


def test_30_6_increment_bills_the_initial_30s_for_a_20s_call():
    assert charge(sheet(increments="30/6"), 20) == Decimal("0.05")


def test_60_1_increment_bills_a_minute_then_seconds():
    assert charge(sheet(increments="60/1"), 45) == Decimal("0.1")
    assert charge(sheet(increments="60/1"), 61) == Decimal("0.1017")


def test_180s_at_a_tenth_per_minute_is_exactly_0_3_with_no_increment_drift():
    assert charge(sheet(peak="0.1", increments="1/1"), 180) == Decimal("0.3")


# --- charges -----------------------------------------------------------------------------

def test_minimum_charge_applies_when_the_call_would_cost_less():
    assert charge(sheet(minimum="0.05"), 10) == Decimal("0.05")  # 10 s × 0.10/60 = 0.0167 < 0.05
    assert charge(sheet(minimum="0.05"), 60) == Decimal("0.1")


def test_setup_charge_comes_from_the_calls_band():
    rates = ("code,peak,offpeak,weekend,peak_setup,offpeak_setup,weekend_setup\n"
             "44,0,0,0,0.03,0.02,0.01\n")
    p = plan(rates)
    assert [r["charge"] for r in rate(p, call(MON_9, 60), call(MON_19, 60), call(SAT_NOON, 60))] == [
        Decimal("0.03"), Decimal("0.02"), Decimal("0.01")]


def test_a_single_setup_column_sets_all_three_bands():
    p = plan(sheet(peak="0", offpeak="0", weekend="0", setup="0.015"))
    assert {r["charge"] for r in rate(p, call(MON_9, 1), call(MON_19, 1), call(SAT_NOON, 1))} == {Decimal("0.015")}


def test_weekend_rate_applies_all_saturday():
    [r] = rate(plan(sheet()), call(SAT_NOON, 60))
    assert (r["band"], r["charge"]) == ("weekend", Decimal("0.02"))


def test_offpeak_starts_at_18_00_end_exclusive():
    p = plan(sheet())
    bands = [r["band"] for r in rate(p, call(datetime(2026, 10, 5, 17, 59, 59), 1), call(datetime(2026, 10, 5, 18), 1),
                                     call(datetime(2026, 10, 5, 7, 59), 1), call(datetime(2026, 10, 5, 8), 1))]
    assert bands == ["peak", "offpeak", "offpeak", "peak"]


def test_unanswered_and_zero_second_calls_cost_nothing_by_default():
    p = plan(sheet(setup="0.05"))
    results = rate(p, call(MON_9, 60, answered=False), call(MON_9, 0))
    assert [(r["status"], r["charge"], r["billable_seconds"]) for r in results] == [("rated", 0, 0), ("rated", 0, 0)]


def test_a_tariff_may_charge_unanswered_calls_their_setup():
    p = plan(sheet(setup="0.05", increments="1/1"), tariff=Tariff("standard", charge_unanswered=True))
    assert rate_one(p, call(MON_9, 0, answered=False))["charge"] == Decimal("0.0517")  # 0.05 + initial 1 s


# --- destinations --------------------------------------------------------------------------

def test_longest_matching_prefix_wins():
    p = plan("code,destination,peak\n44,UK,0.10\n4420,London,0.05\n442079,Central London,0.01\n")
    [london, central, uk] = rate(p, call(MON_9, 60, dialled="02071234567"), call(MON_9, 60, dialled="02079460000"),
                                 call(MON_9, 60, dialled="01174960123"))
    assert [(london["code"], london["destination"]), (central["code"], central["charge"]), uk["code"]] == [
        ("4420", "London"), ("442079", Decimal("0.01")), "44"]


def test_carrier_charge_code_beats_the_dial_prefix_when_the_sheet_has_it():
    p = plan("code,destination,peak\n44,UK,0.10\nUKMOB,UK mobile (carrier code),0.20\n")
    [coded, unknown_code] = rate(p, call(MON_9, 60, dialled="07700900123", charge_code="UKMOB"),
                                 call(MON_9, 60, dialled="07700900123", charge_code="NOPE"))
    assert (coded["code"], coded["charge"]) == ("UKMOB", Decimal("0.2"))
    assert (unknown_code["code"], unknown_code["charge"]) == ("44", Decimal("0.1"))


def test_a_rate_takes_effect_from_its_effective_date():
    p = plan("code,peak,effective_from\n44,0.10,\n44,0.20,2026-10-10\n")
    before, after = rate(p, call(datetime(2026, 10, 9, 23, 59), 60), call(datetime(2026, 10, 12, 9), 60))
    assert (before["charge"], after["charge"]) == (Decimal("0.1"), Decimal("0.2"))


def test_no_rate_is_unrated_with_a_reason():
    r = rate_one(plan(sheet()), call(MON_9, 60, dialled="+33142685300"))
    assert (r["status"], r["charge"], r["reason"]) == ("unrated", None, "no rate for 33142685300 in tariff standard (outbound)")


# --- customers -----------------------------------------------------------------------------

def test_no_customer_is_unmatched_with_a_reason():
    r = rate_one(plan(sheet()), call(MON_9, 60, cli="01999000000"))
    assert (r["status"], r["customer"], r["reason"]) == ("unmatched", None, "no customer has CLI 441999000000")


def test_cli_forms_ddi_prefix_range_and_account_code_all_match():
    clis = (("DDI", "+441632960001"), ("BLOCK", "+4416329601*"), ("RANGE", "441632960200-441632960299"),
            ("ACCT", {"text": "ACC-77"}))
    p = plan(sheet(), clis=clis)
    results = rate(p, call(MON_9, 60), call(MON_9, 60, cli="441632960155"), call(MON_9, 60, cli="01632960250"),
                   call(MON_9, 60, cli="441632960300"), call(MON_9, 60, cli="449", account_code="ACC-77"))
    assert [r["customer"] for r in results] == ["DDI", "BLOCK", "RANGE", None, "ACCT"]


def test_a_cli_limited_to_one_carrier_does_not_claim_another_carriers_calls():
    p = plan(sheet(), clis=(("ACME", {"text": "+441632960001", "carrier": "btw"}),))
    assert rate_one(p, call(MON_9, 60), carrier="gamma")["status"] == "unmatched"
    assert rate_one(p, call(MON_9, 60), carrier="btw")["customer"] == "ACME"


def test_a_cli_counts_only_between_its_effective_dates():
    p = plan(sheet(), clis=(("ACME", {"text": "+441632960001", "effective_from": date(2026, 10, 1),
                                      "effective_to": date(2026, 10, 10)}),))
    results = rate(p, call(datetime(2026, 9, 30, 12), 60), call(MON_9, 60), call(datetime(2026, 10, 10, 9), 60))
    assert [r["status"] for r in results] == ["unmatched", "rated", "unmatched"]


def test_cli_dates_are_the_operators_dates_not_utc():
    # 00:30 BST on 1 Oct is 23:30 UTC on 30 Sep: the CLI, effective from 1 Oct, already counts
    p = plan(sheet(), clis=(("ACME", {"text": "+441632960001", "effective_from": date(2026, 10, 1)}),))
    early = datetime(2026, 9, 30, 23, 30, tzinfo=UTC)
    assert rate_one(p, call(early, 60))["status"] == "rated"


def test_inbound_calls_match_the_dialled_ddi_and_use_the_inbound_sheet():
    p = plan(sheet(peak="0.50"), inbound="code,destination,peak\n44800,Freephone inbound,0.02\n",
             clis=(("ACME", "+448001234567"),))
    r = rate_one(p, call(MON_9, 60, cli="+447700900123", dialled="08001234567"), direction="inbound")
    assert (r["customer"], r["code"], r["charge"]) == ("ACME", "44800", Decimal("0.02"))


def test_the_records_own_direction_overrides_the_files():
    p = plan(sheet(), inbound="code,peak\n44800,0.02\n", clis=(("ACME", "+448001234567"),))
    r = rate_one(p, call(MON_9, 60, cli="+447700900123", dialled="08001234567", direction="inbound"))
    assert r["charge"] == Decimal("0.02")


def test_a_calls_currency_is_its_customers_and_null_when_no_customer_claims_it():
    clis = (("EURO", "+441632960001"), ("ACME", "+441632960002"))
    p = plan(sheet(), clis=clis, currencies={"EURO": "EUR"})  # ACME: the default, GBP
    euro, acme, unrated, unmatched = rate(p, call(MON_9, 60), call(MON_9, 60, cli="+441632960002"),
                                          call(MON_9, 60, dialled="+33142685300"), call(MON_9, 60, cli="01999000000"))
    assert (euro["customer"], euro["currency"], euro["charge"]) == ("EURO", "EUR", Decimal("0.1"))  # 60 s × 0.10/60
    assert (acme["customer"], acme["currency"]) == ("ACME", "GBP")
    assert (unrated["status"], unrated["currency"]) == ("unrated", "EUR")  # its customer's, though not priced
    assert (unmatched["status"], unmatched["customer"], unmatched["currency"]) == ("unmatched", None, None)


# --- carriers --------------------------------------------------------------------------------

def test_a_per_carrier_sheet_overrides_the_tariff_for_that_carriers_calls_only():
    p = plan(sheet(peak="0.10"), carrier_rates="code,peak\n4411,0.08\n")
    via_gamma = rate_one(p, call(MON_9, 60), carrier="gamma")
    via_btw = rate_one(p, call(MON_9, 60), carrier="btw")
    elsewhere_via_gamma = rate_one(p, call(MON_9, 60, dialled="02079460000"), carrier="gamma")
    assert (via_gamma["charge"], via_btw["charge"], elsewhere_via_gamma["charge"]) == (
        Decimal("0.08"), Decimal("0.1"), Decimal("0.1"))


def test_wholesale_cost_is_the_cdrs_own_cost_else_the_carriers_wholesale_sheet():
    p = plan(sheet(), wholesale="code,peak\n44,0.006\n")
    own, from_sheet, btw = rate(p, call(MON_9, 60, cost="0.0123"), call(MON_9, 60)) + [
        rate_one(p, call(MON_9, 60), carrier="btw")]
    assert (own["cost"], from_sheet["cost"], btw["cost"]) == (Decimal("0.0123"), Decimal("0.006"), None)
    assert from_sheet["charge"] - from_sheet["cost"] == Decimal("0.094")  # margin


# --- rounding ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("mode", "tie", "above_tie"), [
    ("half-up", "0.0003", "0.0003"), ("half-even", "0.0002", "0.0003"), ("half-down", "0.0002", "0.0003"),
    ("down", "0.0002", "0.0002"), ("up", "0.0003", "0.0003"),
])
def test_rounding_modes_at_and_above_a_tie(mode, tie, above_tie):
    tariff = Tariff("standard", rounding=mode)
    # 1 s at 0.015/min = 0.00025 exactly (a tie at 4 places); at 0.01506/min = 0.000251
    assert charge(sheet(peak="0.015"), 1, tariff=tariff) == Decimal(tie)
    assert charge(sheet(peak="0.01506"), 1, tariff=tariff) == Decimal(above_tie)


def test_rounding_places_are_per_tariff():
    assert charge(sheet(), 61, tariff=Tariff("standard", places=2)) == Decimal("0.1")  # 0.101666… → 0.10


# --- time zones and bands -----------------------------------------------------------------

SUNDAY_SPLIT_AT_2 = Schedule.from_rules("sun2", "peak,Mon-Fri,00:00,24:00\nweekend,Sat,00:00,24:00\n"
                                                "weekend,Sun,00:00,02:00\noffpeak,Sun,02:00,24:00\n")
SUNDAY_SPLIT_AT_1 = Schedule.from_rules("sun1", "peak,Mon-Fri,00:00,24:00\nweekend,Sat,00:00,24:00\n"
                                                "weekend,Sun,00:00,01:00\noffpeak,Sun,01:00,24:00\n")


def test_spring_daylight_saving_day_bands_follow_london_time():
    p = plan(sheet(), tariff=Tariff("standard", schedule="sun2"), schedules={"sun2": SUNDAY_SPLIT_AT_2})
    # 29 March 2026: clocks go forward at 01:00 UTC. 01:30 UTC is 02:30 BST: offpeak.
    before, after = rate(p, call(datetime(2026, 3, 29, 0, 30, tzinfo=UTC), 60),
                         call(datetime(2026, 3, 29, 1, 30, tzinfo=UTC), 60))
    assert (before["band"], after["band"]) == ("weekend", "offpeak")


def test_autumn_daylight_saving_day_bands_follow_london_time():
    p = plan(sheet(), tariff=Tariff("standard", schedule="sun1"), schedules={"sun1": SUNDAY_SPLIT_AT_1})
    # 25 October 2026: clocks go back at 01:00 UTC. 00:30 UTC is 01:30 BST: offpeak already;
    # 23:30 UTC on the Saturday is 00:30 BST on the Sunday: weekend.
    sunday_early, bst_half_past_one = rate(p, call(datetime(2026, 10, 24, 23, 30, tzinfo=UTC), 60),
                                           call(datetime(2026, 10, 25, 0, 30, tzinfo=UTC), 60))
    assert (sunday_early["band"], bst_half_past_one["band"]) == ("weekend", "offpeak")


def test_holidays_count_as_weekend_when_the_schedule_says_so():
    uk_holidays = Schedule.from_rules("uk-hol", "peak,Mon-Fri,08:00,18:00\noffpeak,Mon-Fri,00:00,08:00\n"
                                                "offpeak,Mon-Fri,18:00,24:00\nweekend,Sat-Sun,00:00,24:00\n",
                                      holidays_as_weekend=True)
    p = plan(sheet(), tariff=Tariff("standard", schedule="uk-hol"), schedules={"uk-hol": uk_holidays})
    christmas = rate_one(p, call(datetime(2026, 12, 25, 10), 60))  # a Friday
    assert (christmas["band"], christmas["charge"]) == ("weekend", Decimal("0.02"))


# --- split bands ---------------------------------------------------------------------------------

SPLIT = Tariff("standard", split_bands=True)


def test_split_at_18_00_prices_each_part_at_its_band_with_setup_from_the_start():
    rates = "code,peak,offpeak,weekend,peak_setup,offpeak_setup,weekend_setup\n44,0.10,0.05,0.02,0.03,0.02,0.01\n"
    start = datetime(2026, 10, 5, 17, 59)
    # 60 s peak (0.10) + 60 s offpeak (0.05) + peak set-up 0.03 = 0.18; unsplit: 0.20 + 0.03
    assert charge(rates, 120, start=start, tariff=SPLIT) == Decimal("0.18")
    assert charge(rates, 120, start=start) == Decimal("0.23")


def test_split_at_midnight_friday_into_the_weekend():
    # 30 s offpeak (0.05/min) + 30 s weekend (0.02/min) = 0.025 + 0.01
    assert charge(sheet(), 60, start=datetime(2026, 10, 9, 23, 59, 30), tariff=SPLIT) == Decimal("0.035")


def test_split_puts_the_increment_round_up_in_the_last_band():
    # 40 s from 17:59:30 bills 60 s (60/60): 30 s peak + 10 s offpeak + 20 s round-up offpeak
    assert charge(sheet(increments="60/60"), 40, start=datetime(2026, 10, 5, 17, 59, 30),
                  tariff=SPLIT) == Decimal("0.075")


def test_split_applies_the_minimum_to_the_whole_call():
    assert charge(sheet(minimum="0.5"), 60, start=datetime(2026, 10, 5, 17, 59, 30), tariff=SPLIT) == Decimal("0.5")
