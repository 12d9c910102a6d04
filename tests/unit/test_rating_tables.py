"""The engine's compiled lookups give the same answers as the rules they speed up: a customers
file read by column is read as ``parse_cli`` reads each row, and a DDI that more than one entry
claims still goes through the precedence rules."""

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdrflow.errors import InputError
from services.rater.clis import cli_table, parse_cli
from tests.unit.rating_helpers import call, plan, rate
from tests.unit.test_rating_rules import MON_9, sheet


@given(st.lists(st.text(alphabet="+0123456789*- ()A", min_size=0, max_size=14), min_size=1, max_size=20))
def test_a_customers_file_is_read_by_column_as_parse_cli_reads_each_row(texts):
    try:
        expected = [parse_cli("ACME", t) for t in texts]
    except InputError:
        with pytest.raises(InputError):
            cli_table(pl.Series(["ACME"] * len(texts)), pl.Series(texts, dtype=pl.String))
        return
    table = cli_table(pl.Series(["ACME"] * len(texts)), pl.Series(texts, dtype=pl.String))
    assert table.select("customer", "kind", "value").rows() == [(e.customer, e.kind, e.value) for e in expected]


def test_a_ddi_also_claimed_for_one_carrier_goes_to_that_carriers_entry_only_for_its_calls():
    p = plan(sheet(), clis=(("ACME", "+441632960001"), ("BETA", {"text": "+441632960001", "carrier": "btw"}),
                            ("CARL", "+441632960002")))
    gamma = rate(p, call(MON_9, 60), call(MON_9, 60, cli="+441632960002"), carrier="gamma")
    btw = rate(p, call(MON_9, 60), call(MON_9, 60, cli="+441632960002"), carrier="btw")
    assert [r["customer"] for r in gamma] == ["ACME", "CARL"]
    assert [r["customer"] for r in btw] == ["BETA", "CARL"]
