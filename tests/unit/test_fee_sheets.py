"""Fixed-fee sheets: validated like rate sheets (every problem with its line number), and one
named test per pricing rule with the arithmetic written out (docs/fixed-fees.md)."""

from datetime import date
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from cdrflow.db.models import CarrierTransaction
from cdrflow.errors import InputError
from services.parser.api import parse_file
from services.rater.feesheet import (FeeSheetError, price_transaction, price_transactions, pro_rata_fraction,
                                     read_fee_sheet, round_once)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "formats"
HEADER = "event_type,reference,description,rule,price,markup,cost,per,effective_from\n"
EXAMPLE = HEADER + """\
Rental,,Business Line Rental*,fixed,15.00,,,month,
Rental,,Business Line Rental*,fixed,16.00,,,month,2026-11-01
Cease,,Business Line Rental*,fixed,15.00,,,month,
Connection,,,fixed,50.00,,,once,
Rental,,Call Barring,markup,,20,,,
,FEATURE-CB,,passthrough,,,,,
*,*,*,markup,,33.333333,,,
"""
"""The sheet of docs/fixed-fees.md, whose worked example these tests assert."""


def sheet(text: str, name: str = "fees.csv"):
    return read_fee_sheet(text.encode(), name)


def one_row(row: str):
    return sheet(HEADER + row + "\n")


def problems_of(text: str) -> list[str]:
    with pytest.raises(FeeSheetError) as caught:
        read_fee_sheet(text.encode(), "fees.csv")
    return caught.value.problems


def fee(**given):
    """A carrier transaction as ``transactions_to_rows`` gives it: a month's rental of £12.50."""
    return {"row": 2, "reference": "01632960001", "description": "Business Line Rental", "event_type": "Rental",
            "period_start": date(2026, 10, 1), "period_end": date(2026, 11, 1), "effective_date": None,
            "quantity": 1, "amount": Decimal("12.50"), "pro_rata": False, "account_code": None} | given


# --- reading and validating ------------------------------------------------------------

def test_a_valid_sheet_reads_every_row_with_exact_money():
    rows = sheet(EXAMPLE).rows
    assert len(rows) == 7
    rental = rows[0]
    assert (rental.line, rental.event_type, rental.description, rental.rule, rental.price, rental.per) == \
        (2, "rental", "business line rental*", "fixed", Decimal("15.00"), "month")
    assert rows[1].effective_from == date(2026, 11, 1)
    assert rows[4].markup == Decimal("20") and rows[4].price is None
    assert rows[6].match == (None, None, None)  # `*` everywhere: the default row
    assert rows[6].markup == Decimal("33.333333")


def test_header_names_are_case_space_and_alias_insensitive():
    [row] = sheet("Event Type,Product Code,Billing Description,RULE,Retail Price,Wholesale Cost,Per\n"
                  "Rental,LR-1,Line*,fixed,15.00,9.50,once\n").rows
    assert (row.event_type, row.reference, row.description, row.price, row.cost, row.per) == \
        ("rental", "lr-1", "line*", Decimal("15.00"), Decimal("9.50"), "once")


def test_a_sheet_without_a_rule_column_is_refused_at_line_1():
    assert problems_of("event_type,price\nRental,15\n") == [
        "line 1: header has no rule column (found: event_type, price)"]


def test_two_columns_meaning_the_same_are_refused_at_line_1():
    assert problems_of("rule,price,retail price\nfixed,1,2\n") == [
        "line 1: columns 'retail price' and another both mean price"]


def test_a_sheet_with_only_a_header_is_refused():
    assert problems_of(HEADER) == ["line 1: the sheet has no rows"]


def test_a_sheet_that_is_not_utf8_is_refused():
    with pytest.raises(FeeSheetError, match="not UTF-8"):
        read_fee_sheet(b"rule,price\nfixed,\xa315\n", "fees.csv")


def test_unknown_rules_and_units_are_reported_per_line():
    assert problems_of(HEADER + "Rental,,,fix,15,,,,\nRental,,,FIXED,15,,,quarter,\n") == [
        "line 2: rule 'fix' is not fixed, markup or passthrough",
        "line 3: per 'quarter' is not month or once",
    ]


def test_each_rule_needs_its_own_amount_and_refuses_the_others():
    assert problems_of(HEADER + "Rental,,,fixed,,,,,\nRental,,,markup,,,,,\n"
                                "Cease,,,fixed,15,20,,,\nCease,,,passthrough,1,,,,\n") == [
        "line 2: rule fixed needs a price",
        "line 3: rule markup needs a markup",
        "line 4: rule fixed takes no markup (ambiguous: which rule is meant?)",
        "line 5: rule passthrough takes no price (ambiguous: which rule is meant?)",
    ]


@pytest.mark.parametrize(("price", "reason"), [
    ("-1.00", "price -1.00 is negative (a credit is priced from the transaction's sign)"),
    ("1e-3", "price '1e-3' is not an amount (digits and a decimal point, e.g. 12.50)"),
    ("12,50", "price '12,50' is not an amount (digits and a decimal point, e.g. 12.50)"),
    ("£12.50", "price '£12.50' is not an amount (digits and a decimal point, e.g. 12.50)"),
    ("NaN", "price 'NaN' is not an amount (digits and a decimal point, e.g. 12.50)"),
    ("1.", "price '1.' is not an amount (digits and a decimal point, e.g. 12.50)"),
    ("0.1234567", "price 0.1234567 has more than 6 decimal places"),
])
def test_a_price_must_be_an_exact_plain_amount(price, reason):
    assert problems_of(HEADER + f'Rental,,,fixed,"{price}",,,,\n') == [f"line 2: {reason}"]


def test_a_bad_effective_date_is_reported():
    assert problems_of(HEADER + "Rental,,,fixed,1,,,,2026-13-01\n") == [
        "line 2: effective_from '2026-13-01' is not a date YYYY-MM-DD"]


def test_duplicate_matches_are_refused_with_the_first_line_ignoring_case_and_star():
    assert problems_of(HEADER + "Rental,,Line*,fixed,1,,,,\nrental,*,LINE*,fixed,2,,,,\n"
                                "Rental,,Line*,fixed,3,,,,2026-11-01\n") == [
        "line 3: duplicate match rental / * / line* (event_type / reference / description; first on line 2)"]


def test_every_problem_is_reported_at_once_and_nothing_is_loaded():
    with pytest.raises(FeeSheetError) as caught:
        read_fee_sheet((HEADER + "Rental,,,fixed,abc,,,,\nRental,,,fixed,1,,,,\n*,,,markup,,5.1234567,-1,,x\n"
                                 "Rental,,,fixed,2,,,,\n").encode(), "fees.csv")
    assert caught.value.problems == [
        "line 2: price 'abc' is not an amount (digits and a decimal point, e.g. 12.50)",
        "line 4: markup 5.1234567 has more than 6 decimal places",
        "line 4: cost -1 is negative (a credit is priced from the transaction's sign)",
        "line 4: effective_from 'x' is not a date YYYY-MM-DD",
        "line 5: duplicate match rental / * / * (event_type / reference / description; first on line 3)",
    ]
    assert isinstance(caught.value, InputError)
    assert str(caught.value).startswith("fees.csv: 5 problem(s), nothing loaded:")


# --- rule 2: the most specific row wins ---------------------------------------------------

PRECEDENCE = HEADER + """\
*,,,fixed,1,,,,
Rental,,,fixed,2,,,,
,,Business*,fixed,3,,,,
,01632960001,,fixed,4,,,,
"""


@pytest.mark.parametrize(("transaction", "line"), [
    (fee(), 5),  # reference beats all
    (fee(reference="01632960009"), 4),  # description pattern beats event type
    (fee(reference="01632960009", description="Call Barring"), 3),  # event type beats the default
    (fee(reference="01632960009", description="Call Barring", event_type="Equipment"), 2),  # the default
])
def test_reference_beats_description_beats_event_type_beats_default(transaction, line):
    assert price_transaction(sheet(PRECEDENCE), transaction).line == line


def test_at_equal_rank_the_row_giving_more_matches_wins():
    rows = HEADER + ",,Business*,fixed,1,,,,\nRental,,Business*,fixed,2,,,,\n"
    assert price_transaction(sheet(rows), fee()).line == 3


def test_at_equal_rank_the_longer_description_pattern_wins():
    rows = HEADER + ",,Business*,fixed,1,,,,\n,,Business Line*,fixed,2,,,,\n"
    assert price_transaction(sheet(rows), fee()).line == 3


def test_two_equally_specific_matches_are_unpriced_as_ambiguous():
    priced = price_transaction(sheet(HEADER + ",,*Line*,fixed,1,,,,\n,,*Rent*,fixed,2,,,,\n"), fee())
    assert (priced.status, priced.price) == ("unpriced", None)
    assert priced.reason == ("lines 2 and 3 of fee sheet fees.csv match equally well (ambiguous): "
                             "make one of them more specific")


def test_matching_ignores_case_and_the_pattern_covers_the_whole_description():
    rows = sheet(HEADER + "rental,,business line rental,fixed,1,,,,\n")
    assert price_transaction(rows, fee(event_type="RENTAL")).status == "priced"
    assert price_transaction(rows, fee(description="Business Line Rental, ISDN2")).status == "unpriced"


def test_no_matching_row_and_no_default_is_unpriced_with_a_reason_and_the_cost_at_stake():
    priced = price_transaction(one_row("Connection,,,fixed,50,,,,"), fee())
    assert (priced.status, priced.price, priced.cost, priced.margin) == ("unpriced", None, Decimal("12.50"), None)
    assert priced.reason == ("no row of fee sheet fees.csv matches event type 'Rental', reference '01632960001', "
                             "description 'Business Line Rental' on 2026-10-01: add a row or a * default row")


# --- rule 1: effective dates --------------------------------------------------------------

def test_the_latest_row_in_effect_on_the_transaction_date_applies():
    example = sheet(EXAMPLE)
    october, november = fee(), fee(period_start=date(2026, 11, 1), period_end=date(2026, 12, 1))
    assert price_transaction(example, october).price == Decimal("15.0000")  # the 16.00 row starts 1 Nov
    assert price_transaction(example, november).price == Decimal("16.0000")


def test_the_effective_date_rather_than_the_period_start_dates_a_transaction():
    assert price_transaction(sheet(EXAMPLE), fee(effective_date=date(2026, 11, 3))).price == Decimal("16.0000")


def test_an_undated_transaction_is_priced_by_undated_rows_only():
    dated_only = one_row("Rental,,,fixed,15,,,,2026-10-01")
    priced = price_transaction(dated_only, fee(period_start=None, period_end=None))
    assert priced.status == "unpriced"
    assert priced.reason.endswith("(it carries no date, so only rows without effective_from apply): "
                                  "add a row or a * default row")


# --- rules 3, 5 and 6: fixed, markup, passthrough, quantity and credits ---------------------

def test_fixed_prices_each_unit_and_keeps_the_carriers_cost_for_margin():
    priced = price_transaction(one_row("Rental,,,fixed,15.00,,,,"), fee(quantity=3, amount=Decimal("37.50")))
    assert (priced.rule, priced.price, priced.cost, priced.cost_from, priced.margin) == \
        ("fixed", Decimal("45.0000"), Decimal("37.50"), "carrier", Decimal("7.50"))  # 3 × 15.00


def test_markup_is_a_percentage_on_the_carriers_whole_amount_not_per_unit():
    priced = price_transaction(one_row("Rental,,,markup,,20,,,"), fee(quantity=2, amount=Decimal("0.75")))
    assert priced.price == Decimal("0.9000")  # 0.75 × 1.20; the amount already covers both units


def test_passthrough_charges_the_carriers_cost():
    priced = price_transaction(one_row("*,,,passthrough,,,,,"), fee(amount=Decimal("12.345678")))
    assert (priced.price, priced.cost, priced.margin) == (Decimal("12.3457"), Decimal("12.345678"), Decimal("0.000022"))


def test_a_credit_of_a_fixed_priced_product_is_the_negative_retail_price():
    priced = price_transaction(one_row("Rental,,,fixed,15.00,,,,"), fee(amount=Decimal("-12.50")))
    assert (priced.price, priced.cost, priced.margin) == (Decimal("-15.0000"), Decimal("-12.50"), Decimal("-2.50"))


def test_a_credit_stays_negative_through_a_markup():
    priced = price_transaction(one_row("Rental,,,markup,,20,,,"), fee(amount=Decimal("-12.50")))
    assert priced.price == Decimal("-15.0000")  # −12.50 × 1.20


def test_a_zero_amount_prices_a_fixed_product_as_a_charge():
    assert price_transaction(one_row("Rental,,,fixed,15,,,,"), fee(amount=Decimal("0"))).price == Decimal("15.0000")


def test_without_an_amount_the_sheets_cost_is_the_cost_so_margin_shows():
    priced = price_transaction(one_row("Rental,,,fixed,15.00,,9.50,,"), fee(amount=None, quantity=2))
    assert (priced.price, priced.cost, priced.cost_from, priced.margin) == \
        (Decimal("30.0000"), Decimal("19.0000"), "sheet", Decimal("11.0000"))  # 2 × 15.00, 2 × 9.50


def test_the_carriers_amount_wins_over_the_sheets_cost():
    priced = price_transaction(one_row("Rental,,,fixed,15.00,,9.50,,"), fee())
    assert (priced.cost, priced.cost_from) == (Decimal("12.50"), "carrier")


def test_markup_without_an_amount_applies_to_the_sheets_cost_and_a_negative_quantity_is_a_credit():
    priced = price_transaction(one_row("Rental,,,markup,,10,9.50,,"), fee(amount=None, quantity=-1))
    assert (priced.price, priced.cost) == (Decimal("-10.4500"), Decimal("-9.5000"))  # −9.50 × 1.10


def test_markup_with_no_amount_and_no_sheet_cost_is_unpriced():
    priced = price_transaction(one_row("Rental,,,markup,,10,,,"), fee(amount=None))
    assert (priced.status, priced.line, priced.cost) == ("unpriced", 2, None)
    assert priced.reason == "the carrier gave no amount and line 2 has no cost to markup on"


def test_a_fixed_price_without_any_cost_is_priced_with_the_cost_unknown():
    priced = price_transaction(one_row("Rental,,,fixed,15,,,,"), fee(amount=None))
    assert (priced.price, priced.cost, priced.margin) == (Decimal("15.0000"), None, None)


def test_a_stored_carrier_transaction_is_priced_like_its_dict():
    stored = CarrierTransaction(**fee(amount=Decimal("-12.500000")), file_id="f", carrier="gamma")
    assert price_transaction(one_row("Rental,,,fixed,15,,,,"), stored).price == Decimal("-15.0000")


# --- rule 4: pro rata ----------------------------------------------------------------------

def test_pro_rata_runs_from_the_effective_date_to_the_period_end_over_the_month():
    priced = price_transaction(one_row("Rental,,,fixed,15.00,,,,"),
                               fee(pro_rata=True, effective_date=date(2026, 10, 15)))
    assert priced.fraction == Fraction(17, 31)  # 15–31 October
    assert priced.price == Decimal("8.2258")  # 15.00 × 17/31 = 8.225806…


def test_pro_rata_without_effective_date_uses_the_period_given():
    assert pro_rata_fraction(date(2026, 10, 15), None, date(2026, 11, 1)) == Fraction(17, 31)


def test_a_pro_rata_part_over_two_months_adds_each_months_share():
    # 22–31 October is 10/31, 1–14 November 14/30
    assert pro_rata_fraction(date(2026, 10, 22), None, date(2026, 11, 15)) == Fraction(10, 31) + Fraction(14, 30)


def test_a_pro_rata_credit_is_the_negative_share_of_the_retail_price():
    priced = price_transaction(one_row("Cease,,,fixed,15.00,,,,"), fee(
        event_type="Cease", pro_rata=True, effective_date=date(2026, 10, 20), amount=Decimal("-12.50")))
    assert priced.price == Decimal("-5.8065")  # −15.00 × 12/31 = −5.806451…


def test_a_one_off_price_is_not_scaled_by_pro_rata():
    priced = price_transaction(one_row("Connection,,,fixed,50.00,,,once,"), fee(
        event_type="Connection", pro_rata=True, effective_date=date(2026, 10, 15), amount=Decimal("35")))
    assert (priced.price, priced.fraction) == (Decimal("50.0000"), Fraction(1))


def test_markup_of_a_pro_rata_amount_is_not_scaled_again():
    priced = price_transaction(one_row("Rental,,,markup,,20,,,"), fee(
        pro_rata=True, effective_date=date(2026, 10, 15), amount=Decimal("6.8548")))
    assert (priced.price, priced.fraction) == (Decimal("8.2258"), Fraction(1))  # 6.8548 × 1.2 = 8.22576


def test_the_sheets_cost_of_a_pro_rata_transaction_is_scaled_like_the_price():
    priced = price_transaction(one_row("Rental,,,fixed,15.00,,9.30,,"), fee(
        amount=None, pro_rata=True, period_start=date(2026, 11, 21), period_end=date(2026, 12, 1)))
    assert (priced.price, priced.cost) == (Decimal("5.0000"), Decimal("3.1000"))  # 10/30 of 15.00 and of 9.30


def test_pro_rata_without_a_period_is_unpriced_for_a_fixed_price():
    priced = price_transaction(one_row("Rental,,,fixed,15,,,,"), fee(pro_rata=True, period_start=None, period_end=None))
    assert priced.status == "unpriced"
    assert priced.reason == "pro-rata without period_start and period_end: can't scale line 2's monthly amount"


def test_a_pro_rata_part_after_its_period_is_unpriced():
    priced = price_transaction(one_row("Rental,,,fixed,15,,,,"), fee(pro_rata=True, effective_date=date(2026, 11, 1)))
    assert priced.reason.startswith("pro-rata part from 2026-11-01 to 2026-11-01 (end exclusive) is empty")


# --- rule 7: exact, rounded once ------------------------------------------------------------

def test_three_thirds_of_a_month_round_once_to_the_whole_price_not_three_roundings():
    # 3 units × 10.00 × 10/30 (21–30 November) = 10 exactly; rounding each unit would give 3 × 3.3333 = 9.9999
    priced = price_transaction(one_row("Rental,,,fixed,10.00,,,,"), fee(
        quantity=3, pro_rata=True, period_start=date(2026, 11, 21), period_end=date(2026, 12, 1)))
    assert priced.price == Decimal("10.0000")


def test_a_one_third_markup_is_computed_exactly_and_rounded_once():
    priced = price_transaction(one_row("Rental,,,markup,,33.333333,,,"), fee(amount=Decimal("3.00")))
    assert priced.price == Decimal("4.0000")  # 3.00 × 1.33333333 = 3.99999999


def test_half_up_rounds_a_credit_away_from_zero_so_it_mirrors_its_charge():
    assert round_once(Fraction(1, 20000)) == Decimal("0.0001")
    assert round_once(Fraction(-1, 20000)) == Decimal("-0.0001")
    assert str(round_once(Fraction(-1, 30000))) == "0.0000"  # no negative zero


@pytest.mark.parametrize(("rounding", "expected"), [
    ("half-up", "0.0002"), ("half-even", "0.0002"), ("half-down", "0.0001"), ("down", "0.0001"), ("up", "0.0002")])
def test_the_tariffs_rounding_mode_and_places_apply(rounding, expected):
    assert round_once(Fraction(3, 20000), 4, rounding) == Decimal(expected)  # 0.00015 exactly
    priced = price_transaction(one_row("*,,,passthrough,,,,,"), fee(amount=Decimal("0.00015")), rounding=rounding)
    assert priced.price == Decimal(expected)


def test_places_are_the_tariffs():
    priced = price_transaction(one_row("Rental,,,fixed,15.00,,,,"),
                               fee(pro_rata=True, effective_date=date(2026, 10, 15)), places=2)
    assert priced.price == Decimal("8.23")


# --- a real SDR file through the parser ------------------------------------------------------

def test_the_gamma_rental_sample_is_priced_as_the_worked_example_says():
    example = sheet(EXAMPLE)
    priced = [p for batch in parse_file(FIXTURES / "gamma-rental-sdr-202610.csv", "gamma-rental",
                                        zone=ZoneInfo("Europe/London"))
              for p in price_transactions(example, batch.records)]
    assert [(p.row, p.status, p.line, p.rule, p.price, p.cost) for p in priced] == [
        (2, "priced", 2, "fixed", Decimal("15.0000"), Decimal("12.50")),  # a month's rental
        (3, "priced", 5, "fixed", Decimal("50.0000"), Decimal("35.00")),  # connection: once, not scaled
        (4, "priced", 4, "fixed", Decimal("-5.8065"), Decimal("-12.50")),  # cease 20 Oct: −15.00 × 12/31
        (5, "priced", 6, "markup", Decimal("0.9000"), Decimal("0.75")),  # 2 × call barring: 0.75 × 1.20
    ]
    assert sum(p.price for p in priced) == Decimal("60.0935")
    assert sum(p.margin for p in priced) == Decimal("24.3435")  # 2.50 + 15.00 + 6.6935 + 0.15


def test_the_generic_sdr_sample_is_priced_row_by_row():
    example = sheet(EXAMPLE)
    priced = [p for batch in parse_file(FIXTURES / "generic-sdr-202610.csv", "generic-sdr",
                                        zone=ZoneInfo("Europe/London"))
              for p in price_transactions(example, batch.records)]
    assert [(p.row, p.line, p.rule, p.price) for p in priced] == [
        (2, 8, "markup", Decimal("16.6667")),  # "Line rental" is no Business Line Rental: 12.50 × 1.33333333
        (3, 8, "markup", Decimal("2.6667")),  # 10 SIP channels, 2.00 in all × 1.33333333
        (4, 7, "passthrough", Decimal("-0.3750")),  # FEATURE-CB credit, the carrier's pro-rata amount
        (5, 5, "fixed", Decimal("50.0000")),  # an undated installation: undated rows apply
    ]
