"""The one engine that runs every format definition over a file, block by block.

For each part of the file (a zip may hold several): read the header (when the format has
one) and resolve the definition's columns to positions; then for each block of lines, split
fields (``tokenise``), read each field as a column (``convert``), and turn every row into
either a record or a rejection with the first reason it can't be read. Rows the definition
says are not calls (``[rows]``) are skipped and counted.

Failing a whole file: when more than ``max_reject_share`` of its rows are rejected. The
share is checked before each batch is handed out (once there are 100 rows to judge by, or at
the end of the file), so a file in the wrong format fails before anything of it is billed.
A file also fails past any of its ``ParseLimits`` (size, lines, blank lines in a row; see
``source``).

Bounded rows: a line longer than ``max_line_bytes`` and a text field longer than its
``FIELD_MAX_CHARS`` are rejected rows, found by column expressions over the whole batch (no
Python per row: lengths in bytes are free in polars). A rejected row keeps a short reason
and at most ``RAW_MAX_CHARS`` of its line, so a 50 MB field never becomes a 50 MB rejection.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl

from cdrflow.callrecords import RECORD_SCHEMA, conform
from cdrflow.errors import BadFileError
from services.parser import convert
from services.parser.definition import (
    CHOICE, COUNT, DATE, FLAG, MONEY, SECONDS, TEXT, TIME, FieldSpec, FormatDefinition, normalise_name,
)
from services.parser.limits import DEFAULT_LIMITS, FIELD_MAX_CHARS, NUMBER_FIELDS, RAW_MAX_CHARS, ParseLimits
from services.parser.records import RejectedRow, clip, clip_line
from services.parser.parts import FilePart, window
from services.parser.source import Block, LongLine, Member, TextSource, members, size_text
from services.parser.tokenise import RAW, ROW, WIDTH, field_name, tokenise
from services.parser.transactions import TRANSACTION_SCHEMA, conform_transactions

JUDGE_AFTER = 100
"""Rows seen before the reject share can fail a file early (small files are judged at their end)."""
WORKERS = 2
"""Blocks read at once (this machine has two cores; more only adds memory)."""
NUMBER_RE = r"^[0-9A-Za-z+*#@:._()\-/ ]+$"
"""What a telephone number (or SIP user, or 'Anonymous') may contain; anything else is garbage."""
NUMBER_NOTE = " (an E.164 number has at most 15 digits)"
OPTIONS = ("limits", "max_reject_share", "zone")


class HeaderMismatchError(BadFileError):
    """A file's header lacks columns its format needs: most likely the carrier's format is not
    the one its files are written in. ``format_name`` is the format that was tried."""

    def __init__(self, message: str, *, file: str | None, format_name: str) -> None:
        self.format_name = format_name
        super().__init__(message, file=file)


@dataclass(frozen=True)
class ParsedBatch:
    """Part of a file: ``records`` conform to RECORD_SCHEMA (CDR formats) or TRANSACTION_SCHEMA
    (SDR formats); ``rejects`` are the rows that could not be read; ``skipped`` rows are not
    calls by the format's own rule (e.g. BroadWorks' non-Normal records)."""

    records: pl.DataFrame
    rejects: list[RejectedRow]
    skipped: int = 0

    @property
    def rows(self) -> int:
        return self.records.height + len(self.rejects) + self.skipped


@dataclass
class ParseTotals:
    """A whole file's counts, added up batch by batch (``add``), and whether it held anything to
    bill: a file with only a header, only blank lines, or no row that was read is not "parsed"."""

    rows: int = 0
    records: int = 0
    rejected: int = 0
    skipped: int = 0

    def add(self, batch: ParsedBatch) -> ParsedBatch:
        self.rows += batch.rows
        self.records += batch.records.height
        self.rejected += len(batch.rejects)
        self.skipped += batch.skipped
        return batch

    def no_records_reason(self, kind: str = "cdr") -> str | None:
        """None when the file gave at least one record; else why not, beginning ``no call records``
        (``no carrier transactions`` for an SDR file)."""
        if self.records:
            return None
        noun = "call records" if kind == "cdr" else "carrier transactions"
        if not self.rows:
            return f"no {noun}: the file has no data rows (nothing but a header or blank lines)"
        parts = [f"{n:,} {what}" for n, what in ((self.rejected, "rejected"),
                                                   (self.skipped, "skipped by the format's rule")) if n]
        return f"no {noun}: {self.rows:,} row(s), {' and '.join(parts)}"


@dataclass
class _Tally:
    rows: int = 0
    rejected: int = 0
    first_reject: RejectedRow | None = None


@dataclass(frozen=True)
class _Layout:
    """A part's columns: ``index`` maps each column reference to its 0-based position."""

    index: Mapping[str | int, int]
    widths: tuple[int, ...]
    keep: list[int] = field(default_factory=list)

    @property
    def width(self) -> int:
        return self.widths[0] if self.widths else max(self.keep, default=0) + 1


class Engine:
    def __init__(self, definition: FormatDefinition, zone: ZoneInfo, options: Mapping[str, Any] | None = None) -> None:
        options = dict(options or {})
        self.definition = definition
        carrier_zone = options.pop("zone", None)
        # The carrier's setting beats the format's own zone, which beats the caller's default.
        self.forced_zone = _zone(carrier_zone, zone) if carrier_zone else None
        self.zone = self.forced_zone or _zone(definition.zone, zone)
        self.max_reject_share = float(options.pop("max_reject_share", definition.max_reject_share))
        self.limits = options.pop("limits", None) or DEFAULT_LIMITS
        if not isinstance(self.limits, ParseLimits):
            raise BadFileError(f"parser option 'limits' must be a ParseLimits, not {type(self.limits).__name__}")
        if options:
            raise BadFileError(f"unknown parser option(s): {', '.join(sorted(options))} (known: {', '.join(OPTIONS)})")
        self.schema = RECORD_SCHEMA if definition.kind == "cdr" else TRANSACTION_SCHEMA

    def parse(self, stream: Any, name: str, batch_rows: int) -> Iterator[ParsedBatch]:
        tally = _Tally()
        pending: ParsedBatch | None = None
        for batch in self._batches(stream, name, batch_rows):
            if pending is not None:
                self._judge(tally, name, final=False)
                yield pending
            tally.rows += batch.rows
            tally.rejected += len(batch.rejects)
            if tally.first_reject is None and batch.rejects:
                tally.first_reject = batch.rejects[0]
            pending = batch
        self._judge(tally, name, final=True)
        if pending is not None:
            yield pending

    def parse_part(self, fh: Any, name: str, batch_rows: int, part: FilePart) -> Iterator[ParsedBatch]:
        """Part ``part`` of a plain file (``services.parser.parts``), its rows numbered as in the
        whole file; the format's header is read from the file's start. The reject share is not
        judged here: the file's last part judges the whole file's (``judge_totals``)."""
        head = TextSource(Member(name, window(fh, 0, part.end)), limits=self.limits)
        layout = self._layout(head, name)
        if layout is None:
            return
        if part.start:
            if head.next_line > part.first_line:
                raise BadFileError(f"line {part.first_line:,}: the header runs into the file's part {part.index} "
                                   "(a header larger than a part?)", file=name)
            source = TextSource(Member(name, window(fh, part.start, part.end)), first_line=part.first_line,
                                limits=self.limits)
        else:
            source = head
        source.block_bytes = max(64 * 1024, min(batch_rows * 100, 32 * 1024**2))
        for batch in self._parsed_blocks(source, layout, batch_rows):
            yield from _split(batch, batch_rows)

    def judge_totals(self, rows: int, rejected: int, first: RejectedRow | None, name: str) -> None:
        """The reject share of a whole file whose parts were parsed apart (BadFileError if too high)."""
        self._judge(_Tally(rows, rejected, first), name, final=True)

    def _judge(self, tally: _Tally, name: str, *, final: bool) -> None:
        if not tally.rows or (tally.rows < JUDGE_AFTER and not final):
            return
        if tally.rejected / tally.rows > self.max_reject_share and tally.first_reject is not None:
            first = tally.first_reject
            raise BadFileError(
                f"{tally.rejected} of {tally.rows} rows rejected (more than {self.max_reject_share:.0%} allowed); "
                f"first at line {first.row}: {first.reason}: is this the right format ({self.definition.name})?",
                file=name)

    def _batches(self, stream: Any, name: str, batch_rows: int) -> Iterator[ParsedBatch]:
        line, blank_run = 1, 0
        for member in members(stream, name, max_bytes=self.limits.max_decompressed_bytes):
            source = TextSource(member, first_line=line, block_bytes=max(64 * 1024, min(batch_rows * 100, 32 * 1024**2)),
                                limits=self.limits, blank_run=blank_run)
            layout = self._layout(source, member.name)
            if layout is not None:
                for batch in self._parsed_blocks(source, layout, batch_rows):
                    yield from _split(batch, batch_rows)
            line, blank_run = source.next_line, source.blank_run

    def _parsed_blocks(self, source: TextSource, layout: _Layout, batch_rows: int) -> Iterator[ParsedBatch]:
        """Each block split and read on a worker thread (polars works without the GIL, so two
        blocks are read at once on two cores), handed out in line order. At most ``WORKERS``
        blocks are in flight, so memory stays flat."""
        with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="cdrflow-parse") as pool:
            in_flight: deque[Future[ParsedBatch | None]] = deque()
            for block in source.blocks():
                if block.lines and block.long_line is None:  # aim the next block at about batch_rows lines
                    per_line = max(1, len(block.data) // block.lines)
                    source.block_bytes = max(64 * 1024, min(per_line * batch_rows, 64 * 1024**2))
                in_flight.append(pool.submit(self._parse_block, block, layout))
                if len(in_flight) >= WORKERS and (done := in_flight.popleft().result()) is not None:
                    yield done
            while in_flight:
                if (done := in_flight.popleft().result()) is not None:
                    yield done

    def _parse_block(self, block: Block, layout: _Layout) -> ParsedBatch | None:
        if block.long_line is not None:
            return self._long_line(block.long_line)
        frame = tokenise(block, self.definition.dialect, layout.width, layout.keep, layout.widths,
                         max_line_bytes=self.limits.max_line_bytes)
        return self._convert(frame, layout) if frame.height else None

    def _long_line(self, line: LongLine) -> ParsedBatch:
        """A line the source read past without holding it: a rejected row, like a long line in a block."""
        records = pl.DataFrame(schema=self.schema)
        reason = _long_line_reason(line.length, self.limits.max_line_bytes)
        return ParsedBatch(records, [RejectedRow(line.row, reason, clip_line(line.head, line.length))])

    # --- header and columns ------------------------------------------------------------

    def _layout(self, source: TextSource, name: str) -> _Layout | None:
        d = self.definition
        header_line = None
        names: list[str] = []
        first_line = source.next_line
        if d.header:
            source.skip_blank_lines()  # in bulk: a file of newlines must not be read line by line
            while (got := source.readline()) is not None and not got[1].strip():
                pass
            if got is None:
                if first_line == 1:
                    raise BadFileError("file is empty: no header line", file=name)
                return None  # an empty member after the first
            header_line, text = got
            names = [normalise_name(n) for n in d.dialect.split_line(text)]
        for _ in range(d.skip_rows):
            source.readline()
        index: dict[str | int, int] = {}
        missing: list[str] = []
        for ref in self.definition.column_refs():
            if isinstance(ref, int):
                index[ref] = ref - 1
            elif normalise_name(ref) in names:
                index[ref] = names.index(normalise_name(ref))
        for spec in d.fields.values():
            for ref in spec.columns:
                if ref not in index and not spec.optional:
                    missing.append(str(ref))
        if d.rows and d.rows.column not in index:
            missing.append(str(d.rows.column))
        if missing:
            expected = ", ".join(dict.fromkeys(str(c) for s in d.fields.values() if not s.optional for c in s.columns))
            raise HeaderMismatchError(f"line {header_line}: not a {d.name} file: header lacks "
                                      f"{', '.join(dict.fromkeys(missing))} (expected columns: {expected})",
                                      file=name, format_name=d.name)
        widths = d.widths or ((len(names),) if d.header else ())
        return _Layout(index=index, widths=widths, keep=sorted(set(index.values())))

    # --- rows -----------------------------------------------------------------------

    def _convert(self, frame: pl.DataFrame, layout: _Layout) -> ParsedBatch:
        d = self.definition
        width = frame.get_column(WIDTH)
        if layout.widths:
            bad_width = ~width.is_in(list(layout.widths))
            expected = " or ".join(str(w) for w in layout.widths)
        else:
            bad_width = width < layout.width
            expected = f"at least {layout.width}"
        width_reason = pl.select(pl.when(bad_width).then(pl.concat_str(
            [pl.lit(f"expected {expected} columns, found "), pl.lit(width).cast(pl.String)]))
            .otherwise(pl.lit(None, pl.String))).to_series()
        raw = frame.get_column(RAW)
        long_reason = _long_lines(raw, self.limits.max_line_bytes)
        skipped = 0
        if d.rows:
            value = frame.get_column(field_name(layout.index[d.rows.column])).str.strip_chars().str.to_lowercase()
            call = value.is_in([v.lower() for v in d.rows.values]) | bad_width | long_reason.is_not_null()
            skipped = int((~call).sum())
            if skipped:
                frame, width_reason, long_reason = frame.filter(call), width_reason.filter(call), long_reason.filter(call)
        values, reasons = self._fields(frame, layout)
        why = convert.first_reason([long_reason, width_reason, *reasons], frame.height)
        bad = why.is_not_null()
        rejects = []
        if bad.any():
            raw = frame.get_column(RAW)
            rejected = pl.DataFrame({"row": frame.get_column(ROW), "reason": why, "raw": raw.str.slice(0, RAW_MAX_CHARS),
                                     "chars": raw.str.len_chars()}).filter(bad)
            rejects = [RejectedRow(r, w, clip(head, n)) for r, w, head, n in rejected.iter_rows()]
        records = pl.DataFrame({"row": frame.get_column(ROW)} | values).filter(~bad)
        if d.kind == "cdr":
            records = conform(records)
        else:
            records = conform_transactions(records)
        return ParsedBatch(records, rejects, skipped)

    def _fields(self, frame: pl.DataFrame, layout: _Layout) -> tuple[dict[str, pl.Series], list[pl.Series]]:
        values: dict[str, pl.Series] = {}
        reasons: list[pl.Series] = []
        n = frame.height
        specs = self.definition.fields
        for name, spec in specs.items():
            if spec.between or spec.derived_from or spec.after:
                continue  # derived below, once the fields they derive from are read
            s = self._text(frame, spec, layout)
            value, why = self._read(s, spec)
            values[name] = value
            reasons.append(why)
        for name, spec in specs.items():
            if spec.between:
                values[name], why = _seconds_between(values[spec.between[0]], values[spec.between[1]], spec)
                reasons.append(why)
        for name, spec in specs.items():
            if spec.after:  # the end of a period given as its first day (exclusive, so the next month's)
                values[name] = values[spec.after].dt.offset_by(f"{spec.months}mo")
        for name, spec in specs.items():
            if spec.derived_from == "duration":
                values[name] = (values["duration"].fill_null(0) > 0)
            elif spec.derived_from == "answer":  # the switch wrote an answer time: the call was answered
                values[name] = values["answer"].is_not_null()
        values.pop("answer", None)
        if "pro_rata_amount" in values:
            part = values.pop("pro_rata_amount")
            if "pro_rata" not in values:
                values["pro_rata"] = part.is_not_null() & (part != 0)
        if self.definition.kind == "cdr" and "answered" not in values:
            values["answered"] = pl.Series([True] * n, dtype=pl.Boolean)  # formats that list answered calls only
        if self.definition.kind == "cdr" and "duration" in values:
            # An unanswered call bills nothing, whatever its duration column says.
            values["duration"] = pl.select(pl.when(values["answered"]).then(values["duration"]).otherwise(0)).to_series()
        return values, [r for r in reasons if r.len() == n]

    def _text(self, frame: pl.DataFrame, spec: FieldSpec, layout: _Layout) -> pl.Series:
        present = [c for c in spec.columns if c in layout.index]
        if not present or len(present) < len(spec.columns):
            return pl.Series([spec.default] * frame.height, dtype=pl.String)
        parts = [frame.get_column(field_name(layout.index[c])).str.strip_chars() for c in present]
        s = parts[0] if len(parts) == 1 else pl.select(pl.concat_str(parts, separator=" ")).to_series()
        if spec.strip:
            s = s.str.strip_chars(spec.strip).str.strip_chars()
        if spec.default is not None:
            s = pl.select(pl.when(s.is_null() | (s == "")).then(pl.lit(spec.default)).otherwise(s)).to_series()
        return s

    def _read(self, s: pl.Series, spec: FieldSpec) -> tuple[pl.Series, pl.Series]:
        if spec.kind == TEXT:
            value, why = convert.read_text(s, spec)
            number = spec.name in NUMBER_FIELDS
            if spec.name in FIELD_MAX_CHARS:
                long = convert.too_long(value, FIELD_MAX_CHARS[spec.name], spec.label(), NUMBER_NOTE if number else "")
                why = convert.first_reason([long, why], len(s))
            if number:
                garbage = value.is_not_null() & ~value.str.contains(NUMBER_RE)
                why = convert.first_reason([why, convert.reason(value, garbage, spec.label(), "is not a telephone number")], len(s))
            return value, why
        if spec.kind == TIME:
            return convert.read_times(s, spec, self.forced_zone or _zone(spec.zone, self.zone))
        if spec.kind == DATE:
            return convert.read_dates(s, spec)
        if spec.kind == SECONDS:
            return convert.read_seconds(s, spec)
        if spec.kind == MONEY:
            return convert.read_money(s, spec)
        if spec.kind == FLAG:
            return convert.read_flag(s, spec, default=True if spec.name == "answered" else False)
        if spec.kind == CHOICE:
            return convert.read_direction(s, spec)
        if spec.kind == COUNT:
            return convert.read_count(s, spec)
        raise AssertionError(spec.kind)


def _long_lines(raw: pl.Series, limit: int) -> pl.Series:
    """Per row, why its line is too long (null where it is not): the byte length of every line is
    known to polars without looking at its bytes, so this costs next to nothing."""
    lengths = raw.str.len_bytes()
    long = lengths > limit
    if not long.any():
        return convert.no_reason(len(raw))
    idx = long.arg_true()
    reasons = pl.Series([_long_line_reason(n, limit) for n in lengths.gather(idx).to_list()], dtype=pl.String)
    return convert.no_reason(len(raw)).scatter(idx, reasons)


def _long_line_reason(length: int, limit: int) -> str:
    return (f"line is {length:,} bytes long: at most {size_text(limit)} a line "
            f"(a quote left open, or not a line of call records?)")


def _seconds_between(start: pl.Series, end: pl.Series, spec: FieldSpec) -> tuple[pl.Series, pl.Series]:
    """Seconds from one time to another (rounded up); 0 when either is missing (e.g. never answered)."""
    micros = (end - start).dt.total_microseconds()
    seconds = ((micros + 999_999) // 1_000_000).fill_null(0)
    bad = seconds < 0
    why = pl.select(pl.when(bad).then(pl.lit(f"{spec.name} is negative: {spec.between[1]} is before {spec.between[0]}"))
                    .otherwise(pl.lit(None, pl.String))).to_series()
    return seconds.cast(pl.Int64), why


def _zone(name: str | None, default: ZoneInfo) -> ZoneInfo:
    if not name:
        return default
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise BadFileError(f"unknown time zone {name!r} in the format or carrier options") from exc


def _split(batch: ParsedBatch, batch_rows: int) -> Iterator[ParsedBatch]:
    """At most ``batch_rows`` records plus rejects per batch, in line order."""
    if batch.records.height + len(batch.rejects) <= batch_rows:
        yield batch
        return
    rows = pl.concat([batch.records.get_column("row"), pl.Series([r.row for r in batch.rejects], dtype=pl.Int64)]).sort()
    cuts = rows.gather_every(batch_rows, offset=batch_rows - 1).to_list()
    if cuts[-1] != rows[-1]:
        cuts.append(rows[-1])
    low = 0
    for i, high in enumerate(cuts):
        part = batch.records.filter((pl.col("row") > low) & (pl.col("row") <= high))
        rejects = [r for r in batch.rejects if low < r.row <= high]
        yield ParsedBatch(part, rejects, batch.skipped if i == 0 else 0)
        low = high
