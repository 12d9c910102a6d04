"""How a held file compares with a file it may repeat: what an operator needs to release or discard it.

Both files are read the way the parser reads them (decompressed, UTF-8, LF line ends), so a
zipped copy and its plain original compare equal. Memory stays flat: lines are compared block
by block, and the profile keeps only counts and the earliest and latest call.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo

from services.parser.api import parse_stream
from services.parser.definition import FormatDefinition
from services.parser.source import TextSource, members


@dataclass(frozen=True)
class Profile:
    """A file as the parser sees it: rows read (calls, rejects and skipped rows) and the range of
    its calls' start times (CDR) or of its fees' period starts (SDR); ``last`` is inclusive."""

    rows: int
    rejected: int
    first: datetime | date | None
    last: datetime | date | None


@dataclass(frozen=True)
class Difference:
    """The first line (1-based, of the decompressed text) where two files differ; a side that has
    ended is None."""

    line: int
    this: str | None
    other: str | None


def profile(stream: BinaryIO, definition: FormatDefinition, *, name: str, zone: ZoneInfo,
            options: Mapping[str, Any] | None = None) -> Profile:
    """Parse the file (nothing is stored) and keep its row count and date range."""
    column = "start" if definition.kind == "cdr" else "period_start"
    rows = rejected = 0
    first = last = None
    for batch in parse_stream(stream, definition, name=name, zone=zone, options=options):
        rows += batch.rows
        rejected += len(batch.rejects)
        if batch.records.height and column in batch.records.columns:
            dates = batch.records.get_column(column).drop_nulls()
            if dates.len():
                lo, hi = dates.min(), dates.max()
                first = lo if first is None or lo < first else first
                last = hi if last is None or hi > last else last
    return Profile(rows, rejected, first, last)


def lines(stream: BinaryIO, name: str) -> Iterator[bytes]:
    """The file's text lines (UTF-8, without line ends), across every member of an archive."""
    for member in members(stream, name):
        for block in TextSource(member).blocks():
            yield from block.data.split(b"\n")[:-1]


def first_difference(this: BinaryIO, other: BinaryIO, *, name: str = "file", other_name: str = "other") -> Difference | None:
    """The first differing line of two files' text, or None when the text is the same."""
    a, b = lines(this, name), lines(other, other_name)
    number = 0
    while True:
        number += 1
        x, y = next(a, None), next(b, None)
        if x is None and y is None:
            return None
        if x != y:
            return Difference(number, _text(x), _text(y))


def _text(line: bytes | None) -> str | None:
    return None if line is None else line.decode("utf-8")


def dates_as_text(value: datetime | date | None) -> str | None:
    return None if value is None else value.isoformat()


__all__ = ["Difference", "Profile", "dates_as_text", "first_difference", "lines", "profile"]
