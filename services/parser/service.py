"""Parser service: file-accepted → record-parsed batches (keyed by file and batch, so one file
spreads over partitions and rater instances) and a closing summary (keyed by file).

The parsing itself is the library (``services.parser.api``); this loop finds the carrier's
format and options, cuts the parsed records into record-parsed events of at most
``batch_size`` records as columns (``cdrflow.batches``), stores the rejects with the file
(they don't travel on the bus), and marks the file parsed or failed.

Idempotence: a repeat after a crash re-parses from line 1; the event ids are derived from
(file, batch number) and the batches are cut the same way each time, so a repeat produces
the same events; stored rejects are replaced, not added to. A file already ``parsed`` is
parsed and announced again when its file-accepted comes again: its events are published
only after the commit that made it ``parsed``, so a crash in between must re-yield them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import polars as pl
from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from cdrflow.bus import RETRACT, Outgoing, ServiceLoop, Topic
from cdrflow.batches import cut, to_columns
from cdrflow.callrecords import conform
from cdrflow.db.models import Carrier, File, FilePartParsed, RejectedRow
from cdrflow.db.upsert import insert_new
from cdrflow.errors import BadFileError, CdrflowError, NotYetVisibleError
from cdrflow.events import Event, EventType, event_id
from cdrflow.log import get_logger
from cdrflow.runtime import Runtime
from services.parser.api import ParseTotals, judge_parts, parse_part, parse_stream
from services.parser.definition import FormatDefinition
from services.parser.engine import HeaderMismatchError, ParsedBatch
from services.parser.formats import carrier_format
from services.parser.hints import format_hint
from services.parser.parts import FilePart, plan_parts
from services.parser.records import RejectedRow as RejectedRowRecord
from services.parser.store import store_transactions

log = get_logger(__name__)

PARSEABLE = ("accepted", "parsed")
"""A file is (re-)parsed in these statuses; past ``parsed`` its events reached the next stage."""

PART_STRIDE = 10_000_000
"""Batch numbers of part p start at p × PART_STRIDE (a part has far fewer batches)."""

PARSE_ROWS = 50_000
"""Rows the library parses at a time; events are then cut to ``batch_size``."""


class Parser:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.zone = runtime.settings.zone
        self.batch_size = runtime.settings.batch_size
        self.part_bytes = runtime.settings.parse_part_bytes

    def on_file_accepted(self, event: Event, session: Session) -> Iterator[Outgoing]:
        event.require("file_id")
        if (found := self._file_to_parse(session, event.data["file_id"], "file-accepted")) is None:
            return  # rated already (everything was announced), not ours to parse, or no format
        file, definition, options = found
        if definition.kind == "cdr" and (parts := self._plan(file)) is not None:
            # Shared out: each part is parsed by whichever instance takes it (nothing else changes
            # here: a repeat plans the same parts, and the parts' own repeats change nothing).
            for part in parts:
                data = {"file_id": file.id, "parts": len(parts)} | part.to_event()
                event = Event(type=EventType.FILE_PART, source=self.runtime.source, subject=file.id,
                              id=event_id(EventType.FILE_PART, file.id, part.index), data=data)
                yield Outgoing(Topic.FILE_PARTS, f"{file.id}/{part.index}", event)
            log.info("file_cut_into_parts", file_id=file.id, parts=len(parts), size=file.size)
            return
        # A repeat after a crash starts again from the first line: earlier rejects are replaced.
        session.execute(delete(RejectedRow).where(RejectedRow.file_id == file.id))
        try:
            yield from self._emit(session, file, definition, options)
        except BadFileError as exc:
            yield RETRACT  # a file fails whole: none of its batches go on
            self._fail(file, self._reason(session, file, exc))

    def _file_to_parse(self, session: Session, file_id: str,
                       what: str) -> tuple[File, FormatDefinition, dict[str, Any]] | None:
        """The file, its carrier's format and options; None if it is past parsing, or failed here
        for want of a format."""
        file = session.get(File, file_id)
        if file is None:
            raise NotYetVisibleError(f"{what} names file {file_id}, which is not in the database")
        if file.status not in PARSEABLE:
            return None
        try:
            definition, options = carrier_format(session, session.get(Carrier, file.carrier), file.kind)
        except BadFileError as exc:
            self._fail(file, str(exc))
            return None
        return file, definition, options

    def _plan(self, file: File) -> list[FilePart] | None:
        if file.size <= self.part_bytes:
            return None
        with self.runtime.store.open(file.fingerprint) as fh:
            return plan_parts(fh, file.size, self.part_bytes)

    def on_file_part(self, event: Event, session: Session) -> Iterator[Outgoing]:
        """One part of a large file: its batches (numbered ``part × PART_STRIDE + n``, so ids stay
        unique per file), its rejects (replacing its own earlier ones: a repeat after a crash), its
        counts; the part that completes the file judges it whole and sends the summary."""
        event.require("file_id", "part", "parts", "start", "end", "first_line", "lines")
        part, parts = FilePart.from_event(event.data), int(event.data["parts"])
        if (found := self._file_to_parse(session, event.data["file_id"], "file-part")) is None:
            return  # failed by another part, past parsing, or no format
        file, definition, options = found
        base = {"file_id": file.id, "carrier": file.carrier, "direction": file.direction}
        lines = part.line_range
        session.execute(delete(RejectedRow).where(RejectedRow.file_id == file.id, RejectedRow.row >= lines.start,
                                                  RejectedRow.row < lines.stop))
        totals, batch = ParseTotals(), part.index * PART_STRIDE
        try:
            with self.runtime.store.open(file.fingerprint) as fh:
                parsed = parse_part(fh, definition, part, name=file.original_name, zone=self.zone,
                                    batch_rows=max(PARSE_ROWS, self.batch_size), options=options)
                for piece_of_file in map(totals.add, parsed):
                    if piece_of_file.rejects:
                        session.execute(insert(RejectedRow), [r.to_event() | {"file_id": file.id}
                                                              for r in piece_of_file.rejects])
                    for piece in cut(conform(piece_of_file.records), self.batch_size):
                        yield self._batch(file, base, batch, piece)
                        batch += 1
        except BadFileError as exc:
            yield RETRACT  # this part's batches stay back; the file fails, and is billed only when rated
            self._fail(file, self._reason(session, file, exc))
            return
        insert_new(session, FilePartParsed.__table__, [{  # a repeat finds its counts there already
            "file_id": file.id, "part": part.index, "parts": parts, "rows": totals.rows, "records": totals.records,
            "rejected": totals.rejected, "skipped": totals.skipped, "batches": batch - part.index * PART_STRIDE,
            "parsed_at": datetime.now(UTC)}], ("file_id", "part"))
        log.info("file_part_parsed", file_id=file.id, part=part.index, parts=parts, rows=totals.rows,
                 records=totals.records, rejected=totals.rejected)
        yield from self._complete(session, file, definition, options, base, parts)

    def _complete(self, session: Session, file: File, definition: FormatDefinition, options: dict[str, Any],
                  base: dict, parts: int) -> Iterator[Outgoing]:
        """Once every part is in: the whole file's verdict and summary. The file's row is locked
        first, so of two instances finishing its last two parts at once, the second sees both."""
        session.execute(select(File.id).where(File.id == file.id).with_for_update())
        done = session.scalars(select(FilePartParsed).where(FilePartParsed.file_id == file.id)).all()
        if len(done) < parts:
            return
        totals = ParseTotals(rows=sum(p.rows for p in done), records=sum(p.records for p in done),
                             rejected=sum(p.rejected for p in done), skipped=sum(p.skipped for p in done))
        first = session.scalars(select(RejectedRow).where(RejectedRow.file_id == file.id)
                                .order_by(RejectedRow.row).limit(1)).first()
        try:
            judge_parts(definition, totals, first and RejectedRowRecord(first.row, first.reason, first.raw),
                        name=file.original_name, zone=self.zone, options=options)
            if (empty := totals.no_records_reason(definition.kind)) is not None:
                raise BadFileError(empty, file=file.original_name)
        except BadFileError as exc:
            self._fail(file, str(exc))  # its parts' calls are stored, but a failed file is never billed
            return
        yield from self._parsed(session, file, definition, base, totals, sum(p.batches for p in done))

    def _emit(self, session: Session, file: File, definition: FormatDefinition, options: dict[str, Any]) -> Iterator[Outgoing]:
        base = {"file_id": file.id, "carrier": file.carrier, "direction": file.direction}
        batch = 0
        totals = ParseTotals()
        with self.runtime.store.open(file.fingerprint) as fh:
            parsed = parse_stream(fh, definition, name=file.original_name, zone=self.zone,
                                  batch_rows=max(PARSE_ROWS, self.batch_size), options=options)
            for part in map(totals.add, parsed):
                if definition.kind == "sdr":
                    self._store_transactions(session, file, part)
                    continue
                if part.rejects:
                    session.execute(insert(RejectedRow), [r.to_event() | {"file_id": file.id} for r in part.rejects])
                for piece in cut(conform(part.records), self.batch_size):
                    yield self._batch(file, base, batch, piece)
                    batch += 1
        if (empty := totals.no_records_reason(definition.kind)) is not None:
            raise BadFileError(empty, file=file.original_name)  # fails the file whole: nothing to bill
        yield from self._parsed(session, file, definition, base, totals, batch)

    def _parsed(self, session: Session, file: File, definition: FormatDefinition, base: dict, totals: ParseTotals,
                batches: int) -> Iterator[Outgoing]:
        """The file's summary, and the file marked parsed."""
        rows, accepted, rejected = totals.rows, totals.records, totals.rejected
        summary = base | {"part": "summary", "batches": batches, "rows": rows, "records": accepted, "rejected": rejected}
        yield self._outgoing(file, "summary", summary)
        # Guarded, not a plain assignment: a re-parse after a crash must not move a file the
        # invoicer has just marked rated back to parsed.
        session.execute(update(File).where(File.id == file.id, File.status.in_(PARSEABLE)).values(
            status="parsed", rows=rows, rejected=rejected, updated_at=datetime.now(UTC),
            status_reason=f"{rejected} row(s) rejected" if rejected else None))
        log.info("file_parsed", file_id=file.id, format=definition.name, rows=rows, records=accepted, rejected=rejected)

    def _store_transactions(self, session: Session, file: File, part: ParsedBatch) -> None:
        if part.rejects:
            session.execute(insert(RejectedRow), [r.to_event() | {"file_id": file.id} for r in part.rejects])
        store_transactions(session, file, part.records)

    def _batch(self, file: File, base: dict, batch: int, records: pl.DataFrame) -> Outgoing:
        data = base | {"part": "batch", "batch": batch, "count": records.height, "records": to_columns(records)}
        return self._outgoing(file, batch, data, key=f"{file.id}/{batch}")

    def _outgoing(self, file: File, part: object, data: dict, key: str | None = None) -> Outgoing:
        event = Event(type=EventType.RECORD_PARSED, source=self.runtime.source, subject=file.id,
                      id=event_id(EventType.RECORD_PARSED, file.id, part), data=data)
        return Outgoing(Topic.RECORD_PARSED, key or file.id, event)

    def _reason(self, session: Session, file: File, exc: BadFileError) -> str:
        """Why the file failed; for a header that doesn't fit, with the format to set instead."""
        if not isinstance(exc, HeaderMismatchError):
            return str(exc)
        try:
            hint = format_hint(session, file, exc.format_name, self.runtime.store.path_of(file.fingerprint), self.zone)
        except (CdrflowError, OSError) as hint_failed:  # the advice is extra: failing the file must not fail
            log.warning("format_hint_failed", file_id=file.id, error=str(hint_failed))
            hint = ""
        return str(exc) + hint

    def _fail(self, file: File, reason: str) -> None:
        file.status, file.status_reason, file.updated_at = "failed", reason, datetime.now(UTC)
        log.warning("file_failed", file_id=file.id, reason=reason)


def build_loop(runtime: Runtime) -> ServiceLoop:
    parser = Parser(runtime)
    s = runtime.settings
    return ServiceLoop(
        service="parser", namespace=s.namespace, bootstrap=s.bootstrap, database=runtime.database,
        visibility_timeout=s.visibility_timeout_seconds,
        producer=runtime.producer, handlers={Topic.FILE_ACCEPTED: parser.on_file_accepted,
                                             Topic.FILE_PARTS: parser.on_file_part},
    )
