from decimal import Decimal

import pytest

from cdrflow.money import MoneyError, format_money, from_micros, round_money, to_micros, to_money


def test_half_up_rounds_a_trailing_5_away_from_zero():
    assert round_money(Decimal("0.03125")) == Decimal("0.0313")
    assert round_money(Decimal("0.00025")) == Decimal("0.0003")


def test_180_seconds_at_a_tenth_per_minute_is_exactly_0_3():
    assert round_money(Decimal("0.1") * 180 / 60) == Decimal("0.3000")


def test_float_is_refused_as_money():
    with pytest.raises(MoneyError, match="refusing float"):
        to_money(0.1)  # type: ignore[arg-type]


def test_non_numeric_text_is_refused():
    with pytest.raises(MoneyError, match="not an amount"):
        to_money("12p")


def test_micros_round_trip_is_exact():
    assert from_micros(to_micros(Decimal("123.456789"))) == Decimal("123.456789")


def test_amount_finer_than_a_millionth_is_refused_not_rounded():
    with pytest.raises(MoneyError, match="more than 6 decimal places"):
        to_micros(Decimal("0.0000001"))


def test_format_money_has_fixed_places_and_no_exponent():
    assert format_money(Decimal("1E+1")) == "10.0000"
