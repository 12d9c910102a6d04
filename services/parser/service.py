"""Parser service: file-accepted → record-parsed batches (keyed by file) and a closing summary."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from sqlalchemy import delete, insert
from sqlalchemy.orm import Session

from cdrflow.bus import Outgoing, ServiceLoop, Topic
from cdrflow.db.models import Carrier, File, RejectedRow
from cdrflow.errors import BadEventError, BadFileError
from cdrflow.events import Event, EventType, event_id
from cdrflow.log import get_logger
from cdrflow.runtime import Runtime
from services.parser.formats import CDR_FORMATS
from services.parser.records import CallRecord

log = get_logger(__name__)


class Parser:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.zone = runtime.settings.zone
        self.batch_size = runtime.settings.batch_size

    def on_file_accepted(self, event: Event, session: Session) -> Iterator[Outgoing]:
        event.require("file_id")
        file = session.get(File, event.data["file_id"])
        if file is None:
            raise BadEventError(f"file-accepted names unknown file {event.data['file_id']}")
        if file.status != "accepted":
            return  # parsed before (a repeat after a crash), or not ours to parse
        parse = self._parser_for(session, file)
        if parse is None:
            return
        # A repeat after a crash starts again from the first line: earlier rejects are replaced.
        session.execute(delete(RejectedRow).where(RejectedRow.file_id == file.id))
        try:
            yield from self._emit(session, file, parse)
        except BadFileError as exc:
            self._fail(file, str(exc))

    def _parser_for(self, session: Session, file: File):  # type: ignore[no-untyped-def]
        carrier = session.get(Carrier, file.carrier)
        if file.kind != "cdr":
            self._fail(file, f"no parser for {file.kind.upper()} files yet: the file is kept and can be re-parsed later")
            return None
        fmt = carrier.file_format if carrier else None
        if fmt not in CDR_FORMATS:
            self._fail(file, f"carrier {file.carrier!r} has file format {fmt!r}, which the parser does not know")
            return None
        return CDR_FORMATS[fmt]

    def _emit(self, session: Session, file: File, parse) -> Iterator[Outgoing]:  # type: ignore[no-untyped-def]
        base = {"file_id": file.id, "carrier": file.carrier, "direction": file.direction}
        records: list[dict] = []
        rejects: list[dict] = []
        batch = rows = accepted = rejected = 0
        with self.runtime.store.open(file.fingerprint) as fh:
            for item in parse(fh, self.zone, file.original_name):
                rows += 1
                if isinstance(item, CallRecord):
                    accepted += 1
                    records.append(item.to_event())
                else:
                    rejected += 1
                    rejects.append(item.to_event())
                if len(records) + len(rejects) >= self.batch_size:
                    yield self._batch(file, base, batch, records, rejects, session)
                    batch, records, rejects = batch + 1, [], []
        if records or rejects:
            yield self._batch(file, base, batch, records, rejects, session)
            batch += 1
        summary = base | {"part": "summary", "batches": batch, "rows": rows, "records": accepted, "rejected": rejected}
        yield self._outgoing(file, "summary", summary)
        file.status, file.rows, file.rejected = "parsed", rows, rejected
        file.status_reason = f"{rejected} row(s) rejected" if rejected else None
        file.updated_at = datetime.now(UTC)
        log.info("file_parsed", file_id=file.id, rows=rows, records=accepted, rejected=rejected)

    def _batch(self, file: File, base: dict, batch: int, records: list, rejects: list, session: Session) -> Outgoing:
        if rejects:
            session.execute(insert(RejectedRow), [r | {"file_id": file.id} for r in rejects])
        return self._outgoing(file, batch, base | {"part": "batch", "batch": batch, "records": records, "rejects": rejects})

    def _outgoing(self, file: File, part: object, data: dict) -> Outgoing:
        event = Event(type=EventType.RECORD_PARSED, source=self.runtime.source, subject=file.id,
                      id=event_id(EventType.RECORD_PARSED, file.id, part), data=data)
        return Outgoing(Topic.RECORD_PARSED, file.id, event)

    def _fail(self, file: File, reason: str) -> None:
        file.status, file.status_reason, file.updated_at = "failed", reason, datetime.now(UTC)
        log.warning("file_failed", file_id=file.id, reason=reason)


def build_loop(runtime: Runtime) -> ServiceLoop:
    parser = Parser(runtime)
    s = runtime.settings
    return ServiceLoop(
        service="parser", namespace=s.namespace, bootstrap=s.bootstrap, database=runtime.database,
        producer=runtime.producer, handlers={Topic.FILE_ACCEPTED: parser.on_file_accepted},
    )
