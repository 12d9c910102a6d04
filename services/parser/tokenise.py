"""Splitting a block of lines into fields, as columns.

The fast path hands the whole block to polars' CSV reader twice: once for the fields (only
the columns a format uses), once for the raw lines (for rejections and column counts). The
two only line up when every record is one line; when they don't (a quoted field holding a
line break, a backslash-escaped delimiter), the block goes through Python's csv module
instead, which is slower but exact about where each record starts.

Column count per line: the number of delimiters plus one, less those inside quoted fields
(found by a regular expression, only on the lines that have any).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass

import polars as pl

from services.parser.source import Block

ROW, RAW, WIDTH = "__row", "__raw", "__width"


@dataclass(frozen=True, slots=True)
class Dialect:
    delimiter: str = ","
    quote: str | None = '"'
    escape: str | None = None  # e.g. "\\" when the carrier escapes delimiters with a backslash

    def reader(self, lines: io.StringIO | list[str]):  # type: ignore[no-untyped-def]
        return csv.reader(lines, delimiter=self.delimiter, quotechar=self.quote or '"',
                          quoting=csv.QUOTE_MINIMAL if self.quote else csv.QUOTE_NONE,
                          escapechar=self.escape, strict=False)

    def split_line(self, line: str) -> list[str]:
        return next(self.reader([line]), [])


def field_name(index: int) -> str:
    return f"f{index}"


def tokenise(block: Block, dialect: Dialect, width: int, keep: list[int]) -> pl.DataFrame:
    """Columns ``__row`` (file line), ``__raw`` (the line), ``__width`` (fields found) and
    ``f<i>`` for each 0-based column index in ``keep`` (null where the line is too short).
    Blank lines are dropped: they are neither calls nor rejections."""
    if dialect.escape is None:
        frame = _fast(block, dialect, width, keep)
        if frame is not None:
            return frame
    return _exact(block, dialect, keep)


def _fast(block: Block, dialect: Dialect, width: int, keep: list[int]) -> pl.DataFrame | None:
    n = block.lines
    if n == 0:
        return _empty(keep)
    try:
        lines = pl.read_csv(block.data, has_header=False, schema={RAW: pl.String}, separator="\x1f",
                            quote_char=None, truncate_ragged_lines=True, empty_string_is_null=False)
        fields = pl.read_csv(block.data, has_header=False, separator=dialect.delimiter, quote_char=dialect.quote,
                             schema={field_name(i): pl.String for i in range(max(width, max(keep, default=0) + 1))},
                             columns=keep or None, truncate_ragged_lines=True,
                             missing_columns="insert", empty_string_is_null=False, infer_schema=False)
    except (pl.exceptions.PolarsError, ValueError):
        return None
    if lines.height != n or fields.height != n:
        return None  # a record spans lines: let the csv module find where each one starts
    raw = lines.get_column(RAW)
    counted = raw.str.count_matches(dialect.delimiter, literal=True).cast(pl.Int32) + 1
    frame = pl.DataFrame({ROW: pl.int_range(block.first_line, block.first_line + n, dtype=pl.Int64, eager=True),
                          RAW: raw, WIDTH: counted})
    frame = pl.concat([frame, fields.select([field_name(i) for i in keep])], how="horizontal")
    frame = frame.filter(raw.str.strip_chars().str.len_bytes() > 0)
    if dialect.quote and dialect.quote.encode() in block.data:
        frame = frame.with_columns(_quoted_width(frame.get_column(RAW), dialect).alias(WIDTH))
    return _blank_missing(frame, keep)


def _quoted_width(raw: pl.Series, dialect: Dialect) -> pl.Series:
    """Field counts where a quoted field may hold the delimiter: only lines with a delimiter
    after an odd number of quotes (inside a quoted field) are re-counted, with the quoted
    parts removed first ("a""b" is two adjacent quoted parts, so doubled quotes work too)."""
    q, d = re.escape(dialect.quote or '"'), re.escape(dialect.delimiter)
    inside = raw.str.contains(f"^(?:[^{q}]*{q}[^{q}]*{q})*[^{q}]*{q}[^{q}]*{d}")
    counted = raw.str.count_matches(dialect.delimiter, literal=True).cast(pl.Int32) + 1
    if not inside.any():
        return counted
    idx = inside.arg_true()
    exact = raw.gather(idx).str.replace_all(f"{q}[^{q}]*{q}", "").str.count_matches(dialect.delimiter, literal=True)
    return counted.scatter(idx, (exact + 1).cast(pl.Int32))


def _blank_missing(frame: pl.DataFrame, keep: list[int]) -> pl.DataFrame:
    """A field past the end of a short line is null, not an empty string."""
    return frame.with_columns(
        [pl.when(pl.col(WIDTH) > i).then(pl.col(field_name(i))).otherwise(None).alias(field_name(i)) for i in keep])


def _exact(block: Block, dialect: Dialect, keep: list[int]) -> pl.DataFrame:
    text = block.data.decode("utf-8")
    physical = text.split("\n")
    reader = dialect.reader(io.StringIO(text, newline=""))
    rows: list[int] = []
    raws: list[str] = []
    widths: list[int] = []
    columns: list[list[str | None]] = [[] for _ in keep]
    seen = 0
    for fields in reader:
        first, seen = seen, reader.line_num
        raw = "\n".join(physical[first:seen])
        if not fields or not raw.strip():
            continue
        rows.append(block.first_line + first)
        raws.append(raw)
        widths.append(len(fields))
        for column, i in zip(columns, keep, strict=True):
            column.append(fields[i] if i < len(fields) else None)
    data: dict[str, object] = {ROW: pl.Series(rows, dtype=pl.Int64), RAW: pl.Series(raws, dtype=pl.String),
                               WIDTH: pl.Series(widths, dtype=pl.Int32)}
    data |= {field_name(i): pl.Series(col, dtype=pl.String) for i, col in zip(keep, columns, strict=True)}
    return pl.DataFrame(data)


def _empty(keep: list[int]) -> pl.DataFrame:
    return pl.DataFrame(schema={ROW: pl.Int64, RAW: pl.String, WIDTH: pl.Int32} | {field_name(i): pl.String for i in keep})
