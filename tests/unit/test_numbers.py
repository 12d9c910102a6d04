import polars as pl
from hypothesis import given
from hypothesis import strategies as st

from cdrflow.numbers import normalise_expr, normalise_number


def test_numbers_normalise_to_e164_digits():
    for raw in ("+44 1632 960001", "00441632960001", "01632960001", "441632960001", "(01632) 960-001"):
        assert normalise_number(raw) == "441632960001"


def test_the_default_country_is_configurable():
    assert normalise_number("0612345678", country_code="33") == "33612345678"


def test_a_trunk_code_is_left_as_it_is():
    assert normalise_number(" TRUNK-7 ") == "TRUNK-7"


@given(st.lists(st.text(alphabet="+0123456789 -()ABC", max_size=16), max_size=30))
def test_the_column_rule_is_the_scalar_rule(raws):
    column = pl.DataFrame({"n": raws}, schema={"n": pl.String}).select(normalise_expr(pl.col("n")))["n"].to_list()
    assert column == [normalise_number(r) for r in raws]
