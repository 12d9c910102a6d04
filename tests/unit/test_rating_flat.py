from decimal import Decimal

from cdrflow.numbers import normalise_number
from services.rater.flat import CustomerRate, rate_call


def test_flat_rate_charges_per_second_rounded_once_half_up():
    rated = rate_call(2, 125, "441632960001", CustomerRate("ACME", Decimal("0.015")))
    assert rated.charge == Decimal("0.0313")  # 0.03125 rounds half-up
    assert rated.status == "rated" and rated.customer == "ACME"


def test_a_call_no_customer_claims_is_unmatched_with_a_reason():
    rated = rate_call(7, 90, "441999000000", None)
    assert (rated.status, rated.charge, rated.reason) == ("unmatched", None, "no customer has CLI 441999000000")


def test_numbers_normalise_to_e164_digits():
    assert normalise_number("+44 1632 960001") == "441632960001"
    assert normalise_number("00441632960001") == "441632960001"
    assert normalise_number("01632960001") == "441632960001"
    assert normalise_number("441632960001") == "441632960001"


def test_a_trunk_code_is_left_as_it_is():
    assert normalise_number(" TRUNK-7 ") == "TRUNK-7"
