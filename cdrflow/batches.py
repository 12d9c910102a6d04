"""Record-level events as columns: one JSON object of equal-length lists per batch, never one
object per call, so that encoding and decoding a batch is a handful of column conversions in
polars instead of Python work per call.

Columns carry their unit in their name where the unit isn't obvious: instants are integer
microseconds since 1970-01-01 UTC (``start_us``, ``end_us``), money is integer millionths of
the currency unit (``cost_micros``, ``charge_micros``): exact, and cheap to move. Which currency
is a column of its own where the batch knows it (a rated call's ``currency``: ISO 4217 code of
its ``charge_micros``), a plain string column like any other. A batch is cut to at most
``max_rows`` rows and about ``SPLIT_BYTES`` of JSON (``cut``), so one event never nears the
broker's message limit, whatever the rows hold.
"""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl

from cdrflow.bus.sizing import SPLIT_BYTES
from cdrflow.errors import BadEventError

TIME_COLUMNS = {"start": "start_us", "end": "end_us"}
MONEY_COLUMNS = {"cost": "cost_micros", "charge": "charge_micros", "cdr_cost": "cdr_cost_micros"}
_ON_THE_BUS = TIME_COLUMNS | MONEY_COLUMNS
_FROM_THE_BUS = {v: k for k, v in _ON_THE_BUS.items()}
NUMBER_BYTES = 12
"""JSON bytes a number, boolean or null column takes per row, separators included (an upper bound
for micros up to 10^12 and microsecond instants)."""


def to_columns(frame: pl.DataFrame) -> dict[str, list]:
    """``frame`` as bus columns: times as UTC microseconds, money as integer micros."""
    renamed = frame.with_columns(
        [pl.col(c).dt.epoch("us") for c in TIME_COLUMNS if c in frame.columns]
    ).rename({c: name for c, name in _ON_THE_BUS.items() if c in frame.columns})
    return renamed.to_dict(as_series=False)


def from_columns(columns: dict[str, list], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """The inverse of ``to_columns``, in ``schema``'s column order and types (missing optional
    columns as nulls); a batch whose columns are not lists of one length is a bad event."""
    if not isinstance(columns, dict):
        raise BadEventError("a batch's columns must be an object of column name to list")
    wire_types: dict[str, pl.DataType] = {}
    data: dict[str, list] = {}
    for name, dtype in schema.items():
        wire = _ON_THE_BUS.get(name, name)
        wire_types[name] = pl.Int64() if name in _ON_THE_BUS else dtype
        data[name] = columns.get(wire)  # type: ignore[assignment]
    lengths = {len(v) for v in data.values() if isinstance(v, list)}
    if len(lengths) > 1 or any(v is not None and not isinstance(v, list) for v in data.values()):
        raise BadEventError(f"a batch's columns must be lists of one length (lengths: {sorted(lengths)})")
    height = lengths.pop() if lengths else 0
    try:
        frame = pl.DataFrame({n: v if v is not None else [None] * height for n, v in data.items()},
                             schema=wire_types, strict=True)
    except (pl.exceptions.PolarsError, TypeError, ValueError, OverflowError) as exc:
        raise BadEventError(f"a batch's columns don't match their types: {exc}") from exc
    casts = [pl.col(n).cast(pl.Datetime("us", "UTC")) for n in TIME_COLUMNS if n in schema]
    return frame.with_columns(casts) if casts else frame


def row_bytes(frame: pl.DataFrame) -> pl.Series:
    """Estimated JSON bytes of each row as bus columns (strings by byte length, quoted)."""
    text = [pl.col(c).str.len_bytes().fill_null(0).cast(pl.Int64) + 3
            for c, t in frame.schema.items() if t == pl.String]
    numbers = NUMBER_BYTES * sum(1 for t in frame.schema.values() if t != pl.String)
    if not text:
        return pl.Series("bytes", [numbers] * frame.height, dtype=pl.Int64)
    return frame.select((pl.sum_horizontal(text) + numbers).alias("bytes")).to_series()


def cut(frame: pl.DataFrame, max_rows: int, max_bytes: int = SPLIT_BYTES) -> Iterator[pl.DataFrame]:
    """``frame`` in consecutive slices of at most ``max_rows`` rows and about ``max_bytes``
    (at least one row each). Deterministic: the cut depends only on the rows."""
    if frame.height == 0:
        return
    total = row_bytes(frame).cum_sum()
    start = 0
    while start < frame.height:
        before = total[start - 1] if start else 0
        by_size = int(total.search_sorted(before + max_bytes, side="right"))
        end = max(start + 1, min(start + max_rows, by_size))
        yield frame.slice(start, end - start)
        start = end
