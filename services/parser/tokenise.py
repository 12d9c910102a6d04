"""Splitting a block of lines into fields, as columns.

The fast path hands the whole block to polars' CSV reader twice: once for the fields (only
the columns a format uses), once for the raw lines (for rejections and column counts). The
two only line up when every record is one line; when they don't (a quoted field holding a
line break, a backslash-escaped delimiter), the block goes through Python's csv module
instead, which is slower but exact about where each record starts.

Column count per line: the number of delimiters plus one, less those inside quoted fields.
In a block with quotes, a line of simple fields in an accepted width is recognised whole by
one regular expression; only the others are counted, minding quotes (see ``_widths``).

Blank lines cost nothing: a block of nothing but whitespace is dropped whole, unread. A line
longer than ``max_line_bytes`` is kept (the engine rejects it by its length); the csv module
is told it may read fields that long, and a longer line never reaches it.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass

import polars as pl

from cdrflow.errors import BadFileError
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
        try:
            return next(self.reader([line]), [])
        except csv.Error as exc:
            raise BadFileError(f"line can't be split into fields ({exc})") from exc


def field_name(index: int) -> str:
    return f"f{index}"


def tokenise(block: Block, dialect: Dialect, width: int, keep: list[int], widths: tuple[int, ...] = (),
             *, max_line_bytes: int | None = None) -> pl.DataFrame:
    """Columns ``__row`` (file line), ``__raw`` (the line), ``__width`` (fields found) and
    ``f<i>`` for each 0-based column index in ``keep`` (null where the line is too short).
    Blank lines are dropped: they are neither calls nor rejections."""
    if block.data.isspace():  # stops at the first byte of text: free for any other block
        return _empty(keep)
    if dialect.escape is None:
        frame = _fast(block, dialect, width, keep, widths)
        if frame is not None:
            return frame
    return _exact(block, dialect, keep, max_line_bytes)


def _fast(block: Block, dialect: Dialect, width: int, keep: list[int], widths: tuple[int, ...]) -> pl.DataFrame | None:
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
    quoted = dialect.quote is not None and dialect.quote.encode() in block.data
    frame = pl.DataFrame({ROW: pl.int_range(block.first_line, block.first_line + n, dtype=pl.Int64, eager=True),
                          RAW: raw, WIDTH: _widths(raw, dialect, widths, quoted=quoted)})
    frame = pl.concat([frame, fields.select([field_name(i) for i in keep])], how="horizontal")
    frame = frame.filter(raw.str.strip_chars().str.len_bytes() > 0)
    return _blank_missing(frame, keep)


def _widths(raw: pl.Series, dialect: Dialect, widths: tuple[int, ...], *, quoted: bool) -> pl.Series:
    """Fields per line. Without a quote in the block: delimiters + 1. With quotes, a line of
    simple fields (quoted or not, none holding a quote or a delimiter) in one of the accepted
    widths is matched whole by one regular expression per width, which is cheaper than
    counting; only the other lines are counted, minding quotes (``_quoted_width``)."""
    d = dialect.delimiter
    if not quoted:
        return raw.str.count_matches(d, literal=True).cast(pl.Int32) + 1
    out = pl.repeat(None, len(raw), dtype=pl.Int32, eager=True)
    for w in widths:
        if w > MAX_SHAPED_WIDTH:
            continue
        idx = out.is_null().arg_true()
        if idx.len() == 0:
            break
        hit = raw.gather(idx).str.contains(_shape(dialect, w))
        if hit.any():
            out = out.scatter(idx.filter(hit), w)
    rest = out.is_null().arg_true()
    if rest.len():
        lines = raw.gather(rest)
        delimiters = lines.str.count_matches(d, literal=True).cast(pl.Int32)
        out = out.scatter(rest, _quoted_width(lines, delimiters, dialect))
    return out


MAX_SHAPED_WIDTH = 200
"""Wider lines are always counted (a regular expression per width grows with it)."""


def _shape(dialect: Dialect, width: int) -> str:
    q, d = re.escape(dialect.quote or '"'), re.escape(dialect.delimiter)
    simple = f"(?:{q}[^{q}{d}]*{q}|[^{q}{d}]*)"
    return f"^{simple}(?:{d}{simple}){{{width - 1}}}$"


def _quoted_width(raw: pl.Series, delimiters: pl.Series, dialect: Dialect) -> pl.Series:
    """Field counts where a quoted field may hold the delimiter.

    Most quoted lines are quoted throughout (``"a","b",""``): when every delimiter sits
    between two quotes and the line has exactly two quotes per field, no field can hold a
    delimiter or a quote, so the plain count is exact (three literal counts: cheap). Other
    lines with a quote are checked by a regular expression for a delimiter after an odd
    number of quotes (inside a quoted field), and only those are re-counted with the quoted
    parts removed ("a""b" is two adjacent quoted parts, so doubled quotes work too)."""
    q, d = dialect.quote or '"', dialect.delimiter
    plain = ((raw.str.count_matches(f"{q}{d}{q}", literal=True) == delimiters)
             & (raw.str.count_matches(q, literal=True) == 2 * (delimiters + 1))
             & raw.str.starts_with(q) & raw.str.ends_with(q)) | ~raw.str.contains(q, literal=True)
    counted = delimiters + 1
    if plain.all():
        return counted
    idx = (~plain).arg_true()
    qe, de = re.escape(q), re.escape(d)
    maybe = raw.gather(idx)
    inside = maybe.str.contains(f"^(?:[^{qe}]*{qe}[^{qe}]*{qe})*[^{qe}]*{qe}[^{qe}]*{de}")
    if not inside.any():
        return counted
    idx, maybe = idx.filter(inside), maybe.filter(inside)
    exact = maybe.str.replace_all(f"{qe}[^{qe}]*{qe}", "").str.count_matches(d, literal=True)
    return counted.scatter(idx, (exact + 1).cast(pl.Int32))


def _blank_missing(frame: pl.DataFrame, keep: list[int]) -> pl.DataFrame:
    """A field past the end of a short line is null, not an empty string."""
    return frame.with_columns(
        [pl.when(pl.col(WIDTH) > i).then(pl.col(field_name(i))).otherwise(None).alias(field_name(i)) for i in keep])


def _exact(block: Block, dialect: Dialect, keep: list[int], max_line_bytes: int | None = None) -> pl.DataFrame:
    text = block.data.decode("utf-8")
    physical = text.split("\n")
    rows: list[int] = []
    raws: list[str] = []
    widths: list[int] = []
    columns: list[list[str | None]] = [[] for _ in keep]
    long: set[int] = set()
    if max_line_bytes is not None:
        if csv.field_size_limit() < max_line_bytes:
            csv.field_size_limit(max_line_bytes)  # process-wide, and only ever raised: a field fits in a line
        long = {i for i, line in enumerate(physical) if len(line) > max_line_bytes}
        if long:  # each is a row of its own, rejected by its length; the csv module sees a blank line
            for i in sorted(long):
                rows.append(block.first_line + i)
                raws.append(physical[i])
                widths.append(0)
                for column in columns:
                    column.append(None)
            text = "\n".join("" if i in long else line for i, line in enumerate(physical))
    reader = dialect.reader(io.StringIO(text, newline=""))
    seen = 0
    for fields in _guarded(reader, block.first_line):
        first, seen = seen, reader.line_num
        raw = "\n".join(physical[first:seen])
        if not fields or not raw.strip() or first in long:
            continue
        rows.append(block.first_line + first)
        raws.append(raw)
        widths.append(len(fields))
        for column, i in zip(columns, keep, strict=True):
            column.append(fields[i] if i < len(fields) else None)
    data: dict[str, object] = {ROW: pl.Series(rows, dtype=pl.Int64), RAW: pl.Series(raws, dtype=pl.String),
                               WIDTH: pl.Series(widths, dtype=pl.Int32)}
    data |= {field_name(i): pl.Series(col, dtype=pl.String) for i, col in zip(keep, columns, strict=True)}
    frame = pl.DataFrame(data)
    return frame.sort(ROW) if long else frame


def _guarded(reader, first_line: int):  # type: ignore[no-untyped-def]
    """The csv reader's records; its errors (e.g. a field over its size limit) become BadFileError."""
    try:
        yield from reader
    except csv.Error as exc:
        raise BadFileError(f"line {first_line + reader.line_num - 1}: can't be split into fields ({exc})") from exc


def _empty(keep: list[int]) -> pl.DataFrame:
    return pl.DataFrame(schema={ROW: pl.Int64, RAW: pl.String, WIDTH: pl.Int32} | {field_name(i): pl.String for i in keep})
