"""The parser as a library: a carrier's file in, batches of call records (columns) and rejected rows out.

    for batch in parse_file(Path("Master.csv.gz"), "asterisk", zone=ZoneInfo("Europe/London")):
        batch.records   # polars DataFrame conforming to cdrflow.callrecords.RECORD_SCHEMA
        batch.rejects   # [RejectedRow(row, reason, raw)]

A bad row is data (a rejection); a bad file raises ``BadFileError`` naming the file, the line
and the reason. Work per file is bounded (``ParseLimits``: decompressed size, lines, line
length, blank lines in a row) and so is every field (``limits.FIELD_MAX_CHARS``). Nothing
else escapes: no polars, csv or codec exception reaches the caller.
Memory stays flat: the file is read in blocks of about ``batch_rows`` lines.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo

from cdrflow.errors import BadFileError
from services.parser.definition import FormatDefinition
from services.parser.engine import Engine, ParsedBatch, ParseTotals
from services.parser.limits import ParseLimits
from services.parser.parts import FilePart
from services.parser.records import RejectedRow
from services.parser.registry import builtin_formats

__all__ = ["BadFileError", "FormatDefinition", "ParseLimits", "ParseTotals", "ParsedBatch", "RejectedRow",
           "find_format", "judge_parts", "known_formats", "parse_file", "parse_part", "parse_stream"]


def known_formats() -> list[str]:
    """Names of the built-in formats (custom ones live in the database: ``cdrflow formats``)."""
    return sorted(builtin_formats())


def find_format(fmt: str | FormatDefinition, custom: Mapping[str, FormatDefinition] | None = None) -> FormatDefinition:
    if isinstance(fmt, FormatDefinition):
        return fmt
    found = (custom or {}).get(fmt) or builtin_formats().get(fmt)
    if found is None:
        names = sorted(set(builtin_formats()) | set(custom or {}))
        raise BadFileError(f"unknown file format {fmt!r} (known: {', '.join(names)})")
    return found


def parse_stream(stream: BinaryIO, fmt: str | FormatDefinition, *, name: str, zone: ZoneInfo,
                 batch_rows: int = 100_000, options: Mapping[str, Any] | None = None) -> Iterator[ParsedBatch]:
    """Batches of at most ``batch_rows`` records plus rejects, in line order.

    ``fmt``: a known format's name or a definition. ``zone``: where times without an offset
    are read, unless the format or ``options["zone"]`` (the carrier's switch) says otherwise.
    ``options``: ``zone``, ``max_reject_share`` (0..1; more rejected rows than this fails the file),
    ``limits`` (a ``ParseLimits``; default ``limits.DEFAULT_LIMITS``).

    A file with no data rows (only a header, only blank lines) yields no batch at all; add the
    batches up in a ``ParseTotals`` and ask its ``no_records_reason`` (docs/formats.md, "Limits").
    """
    if batch_rows < 1:
        raise ValueError("batch_rows must be at least 1")
    yield from _translated(Engine(find_format(fmt), zone, options).parse(stream, name, batch_rows), name)


def parse_part(fh: BinaryIO, fmt: str | FormatDefinition, part: FilePart, *, name: str, zone: ZoneInfo,
               batch_rows: int = 100_000, options: Mapping[str, Any] | None = None) -> Iterator[ParsedBatch]:
    """One part of a plain file (``services.parser.parts.plan_parts``; ``fh`` seekable), rows
    numbered as in the whole file. The reject share is left to ``judge_parts``, once all are in."""
    if batch_rows < 1:
        raise ValueError("batch_rows must be at least 1")
    yield from _translated(Engine(find_format(fmt), zone, options).parse_part(fh, name, batch_rows, part), name)


def judge_parts(fmt: str | FormatDefinition, totals: ParseTotals, first_reject: RejectedRow | None, *, name: str,
                zone: ZoneInfo, options: Mapping[str, Any] | None = None) -> None:
    """BadFileError if a file parsed in parts rejected more rows than its format (or carrier) allows."""
    Engine(find_format(fmt), zone, options).judge_totals(totals.rows, totals.rejected, first_reject, name)


def _translated(batches: Iterator[ParsedBatch], name: str) -> Iterator[ParsedBatch]:
    """Only BadFileError leaves the parser, always naming the file."""
    try:
        yield from batches
    except BadFileError as exc:
        if exc.file is None:
            raise BadFileError(str(exc), file=name) from exc
        raise
    except (UnicodeError, OSError, EOFError, MemoryError) as exc:
        raise BadFileError(f"can't be read: {exc}", file=name) from exc


def parse_file(path: Path, fmt: str | FormatDefinition, *, zone: ZoneInfo, batch_rows: int = 100_000,
               options: Mapping[str, Any] | None = None) -> Iterator[ParsedBatch]:
    with open(path, "rb") as fh:
        yield from parse_stream(fh, fmt, name=path.name, zone=zone, batch_rows=batch_rows, options=options)
