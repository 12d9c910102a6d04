"""Record-level events as columns: exact round trips, batches cut by rows and by bytes, bad
columns refused as bad events; and a file rated only once all its batches are stored, in
whatever order they and its summary come."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import polars as pl
import pytest

from cdrflow.batches import cut, from_columns, row_bytes, to_columns
from cdrflow.bus.sizing import SPLIT_BYTES
from cdrflow.callrecords import RECORD_SCHEMA
from cdrflow.errors import BadEventError


def records(n: int, dialled: str = "01174960123") -> pl.DataFrame:
    return pl.DataFrame({
        "row": list(range(2, n + 2)), "cli": ["+441632960001"] * n, "dialled": [dialled] * n,
        "start": [datetime(2026, 10, 25, 1, 30, 0, 123456, tzinfo=UTC)] * n, "end": [None] * n,
        "duration": [60] * n, "answered": [True] * n, "charge_code": [None] * n,
        "cost": [1] * (n - 1) + [-123_456_789_012], "account_code": [None] * n, "direction": ["inbound"] * n,
    }, schema=RECORD_SCHEMA)


def test_a_batch_goes_over_the_bus_and_back_exactly_microseconds_and_micros_included():
    frame = records(5)
    wire = orjson.loads(orjson.dumps(to_columns(frame)))
    assert wire["start_us"][0] == 1_792_891_800_123_456 and wire["cost_micros"][-1] == -123_456_789_012
    assert "start" not in wire and "cost" not in wire
    assert from_columns(wire, RECORD_SCHEMA).equals(frame)


def test_missing_optional_columns_come_back_as_nulls():
    wire = {"row": [2], "cli": ["1"], "dialled": ["2"], "start_us": [0], "duration": [5], "answered": [True]}
    back = from_columns(wire, RECORD_SCHEMA)
    assert back["cost"].to_list() == [None] and back["end"].to_list() == [None]


@pytest.mark.parametrize("columns", [{"row": [1, 2], "cli": ["a"]}, {"row": "1"}, {"row": ["x"]}, ["row"]])
def test_columns_of_different_lengths_or_wrong_types_are_a_bad_event(columns):
    with pytest.raises(BadEventError):
        from_columns(columns, RECORD_SCHEMA)


def test_a_batch_is_cut_at_its_row_count():
    sizes = [p.height for p in cut(records(2_500), max_rows=1_000)]
    assert sizes == [1_000, 1_000, 500]


def test_a_batch_of_long_rows_is_cut_by_bytes_to_stay_under_the_broker_limit():
    frame = records(30_000, dialled="9" * 32).with_columns(charge_code=pl.lit("C" * 64), account_code=pl.lit("A" * 64))
    pieces = list(cut(frame, max_rows=50_000))
    assert len(pieces) > 1 and sum(p.height for p in pieces) == 30_000
    for piece in pieces:
        # the estimate is an upper bound of the JSON, so the event stays under the budget
        assert len(orjson.dumps(to_columns(piece))) <= int(row_bytes(piece).sum()) <= SPLIT_BYTES
    assert pl.concat(pieces).equals(frame)


def test_one_row_larger_than_the_byte_budget_still_goes_alone():
    assert [p.height for p in cut(records(3), max_rows=10, max_bytes=10)] == [1, 1, 1]
