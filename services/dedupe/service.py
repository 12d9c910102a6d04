"""Dedupe service: file-arrived → files table → file-accepted or file-held; admin-commands → release/discard.

Who came first is decided by the database, not by this process: each file inserts a claim on
its content fingerprint (and on its carrier and name); the insert that conflicts belongs to a
later copy. Two copies arriving at once through two gateways, handled by two dedupe processes,
end with exactly one accepted: on PostgreSQL the second insert waits for the first transaction
and then conflicts; on SQLite writers are serialised.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from cdrflow.bus import Outgoing, ServiceLoop, Topic
from cdrflow.db.models import Carrier, File, FileCandidate, FileDecision, FileNameClaim, FingerprintClaim
from cdrflow.db.upsert import insert_new
from cdrflow.errors import BadFileError, NotYetVisibleError
from cdrflow.events import Event, EventType, event_id
from cdrflow.log import get_logger
from cdrflow.runtime import Runtime
from services.dedupe.decision import Held, decide
from services.dedupe.fingerprint import content_fingerprint

log = get_logger(__name__)

FILE_FIELDS = ("file_id", "fingerprint", "size", "carrier", "kind", "period", "direction",
               "original_name", "channel", "received_at")
COMMANDS = {"release": "released", "discard": "discarded"}
RETRY = "retry"
RETRYABLE = ("failed", "accepted", "parsed")
"""A retry sends a file through again from parsing: a failed one, or one stuck on its way
(accepted or parsed and not moving). Every step after is keyed, so nothing is stored twice."""


class Dedupe:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def on_file_arrived(self, event: Event, session: Session) -> Iterator[Outgoing]:
        event.require(*FILE_FIELDS)
        d = event.data
        file = session.get(File, d["file_id"])
        if file is None:
            file = self._record(session, d)
        elif file.status not in ("held", "accepted"):
            return  # already downstream of dedupe: the decision was delivered before
        yield self._announce(session, file)

    def _content_fingerprint(self, d: dict) -> str:
        """The decompressed content's SHA-256; for a damaged archive, the bytes' own (the parser
        will fail the file with the reason, and a byte-identical copy is still found)."""
        with self.runtime.store.open(d["fingerprint"]) as fh:
            try:
                return content_fingerprint(fh, d["original_name"])
            except BadFileError as exc:
                log.warning("content_fingerprint_unreadable", file_id=d["file_id"], error=str(exc))
                return d["fingerprint"]

    def _record(self, session: Session, d: dict) -> File:
        """Insert the file, then its claims, then decide. The order matters: the claims point
        at the file row, and a conflicting claim must be seen after the winner has committed."""
        content = self._content_fingerprint(d)
        file = File(
            id=d["file_id"], fingerprint=d["fingerprint"], content_fingerprint=content, size=d["size"],
            carrier=d["carrier"], kind=d["kind"], period=d["period"], direction=d["direction"],
            original_name=d["original_name"], channel=d["channel"],
            received_at=datetime.fromisoformat(d["received_at"]), status="arrived", updated_at=datetime.now(UTC),
        )
        session.add(file)
        session.flush()
        first_of_content = insert_new(session, FingerprintClaim.__table__,
                                      [{"content_fingerprint": content, "file_id": file.id}],
                                      key=["content_fingerprint"]) == 1
        first_of_name = insert_new(session, FileNameClaim.__table__,
                                   [{"carrier": file.carrier, "original_name": file.original_name, "file_id": file.id}],
                                   key=["carrier", "original_name"]) == 1
        same_content = [] if first_of_content else self._earlier(
            session, file, File.content_fingerprint == content,
            session.get(FingerprintClaim, content))
        carrier = session.get(Carrier, file.carrier)
        hold_same_name = bool(carrier and carrier.hold_same_name)
        same_name = [] if first_of_name or not hold_same_name else self._earlier(
            session, file, (File.carrier == file.carrier) & (File.original_name == file.original_name),
            session.get(FileNameClaim, (file.carrier, file.original_name)))
        decision = decide(same_content, same_name, hold_same_name=hold_same_name)
        if isinstance(decision, Held):
            file.status, file.status_reason, file.hold_reason = "held", decision.reason, decision.hold_reason
            session.add_all(FileCandidate(file_id=file.id, candidate_file_id=c) for c in decision.candidates)
        else:
            file.status = "accepted"
        log.info("file_" + file.status, file_id=file.id, fingerprint=file.fingerprint, content_fingerprint=content,
                 original_name=file.original_name, hold_reason=file.hold_reason)
        return file

    @staticmethod
    def _earlier(session: Session, file: File, same: ColumnElement[bool],
                 claim: FingerprintClaim | FileNameClaim | None) -> list[str]:
        """Ids of the other files matching ``same``, oldest first; never empty for a lost claim."""
        ids = list(session.scalars(select(File.id).where(same, File.id != file.id)
                                   .order_by(File.received_at, File.id)))
        return ids or ([claim.file_id] if claim else [])

    def _announce(self, session: Session, file: File) -> Outgoing:
        if file.status == "held":
            data = file.metadata_for_event() | {
                "reason": file.status_reason,
                "hold_reason": file.hold_reason or "duplicate",
                "candidates": [candidate_view(c) for c in candidates_of(session, file.id)],
            }
            return self._event(Topic.FILE_HELD, EventType.FILE_HELD, file, data)
        return self._event(Topic.FILE_ACCEPTED, EventType.FILE_ACCEPTED, file, file.metadata_for_event())

    def _event(self, topic: Topic, type_: str, file: File, data: dict, id_part: str | None = None) -> Outgoing:
        part = id_part if id_part is not None else (file.status_reason or "")
        event = Event(type=type_, source=self.runtime.source, subject=file.id,
                      id=event_id(type_, file.id, part), data=data)
        return Outgoing(topic, file.fingerprint, event)

    def on_admin_command(self, event: Event, session: Session) -> Iterator[Outgoing]:
        """release: a held file goes on as a new file; discard: it is kept but never billed.

        A held file is decided once (``file_decisions`` is keyed by file). The same command
        again changes nothing (a release re-announces the same file-accepted event, which the
        parser ignores once parsed); a command on a file that is not held is refused here as
        well as by the admin API, which answers the operator with the reason."""
        event.require("command")
        command = event.data["command"]
        if command != RETRY and command not in COMMANDS:
            return  # another service's command (the invoicer's overlaps, reverse and credit: no file_id for credit)
        event.require("file_id")
        file_id = event.data["file_id"]
        file = session.get(File, file_id)
        if file is None:
            raise NotYetVisibleError(f"admin command {command} names file {file_id}, which is not in the database")
        if command == RETRY:
            yield from self._retry(file, event)
            return
        decided = session.get(FileDecision, file_id)
        if decided is not None:
            if decided.command != command:
                log.warning("admin_command_refused", command=command, file_id=file_id,
                            error=f"file was {COMMANDS[decided.command]} by {decided.operator} already")
            elif command == "release":
                yield self._released(file)
            return
        if file.status != "held":
            log.warning("admin_command_refused", command=command, file_id=file_id,
                        error=f"file is {file.status}, not held")
            return
        operator = event.data.get("operator") or "operator"
        reason = (event.data.get("reason") or "").strip()
        now = datetime.now(UTC)
        session.add(FileDecision(file_id=file_id, command=command, operator=operator, reason=reason,
                                 command_id=event.id, decided_at=now))
        file.status = "accepted" if command == "release" else "discarded"
        file.status_reason = f"{COMMANDS[command]} by {operator}" + (f": {reason}" if reason else "")
        file.updated_at = now
        log.info("file_" + COMMANDS[command], file_id=file_id, operator=operator, reason=reason)
        if command == "release":
            yield self._released(file)

    def _retry(self, file: File, event: Event) -> Iterator[Outgoing]:
        """Send the file to the parser again. The file-accepted event's id is the command's,
        so the same command repeated after a crash is the same event; a second retry command
        of a file already on its way again changes nothing."""
        if file.status not in RETRYABLE:
            log.warning("admin_command_refused", command=RETRY, file_id=file.id,
                        error=f"file is {file.status}: only a failed or stuck file is retried")
            return
        operator = event.data.get("operator") or "operator"
        reason = (event.data.get("reason") or "").strip()
        file.status, file.updated_at = "accepted", datetime.now(UTC)
        file.status_reason = f"retried by {operator}" + (f": {reason}" if reason else "")
        log.info("file_retried", file_id=file.id, operator=operator, reason=reason)
        yield self._event(Topic.FILE_ACCEPTED, EventType.FILE_ACCEPTED, file,
                          file.metadata_for_event() | {"retried": True}, id_part=f"retry-{event.id}")

    def _released(self, file: File) -> Outgoing:
        return self._event(Topic.FILE_ACCEPTED, EventType.FILE_ACCEPTED, file,
                           file.metadata_for_event() | {"released": True}, id_part="released")


def candidates_of(session: Session, file_id: str) -> list[File]:
    """The earlier files a held file may repeat, oldest first."""
    return list(session.scalars(
        select(File).join(FileCandidate, FileCandidate.candidate_file_id == File.id)
        .where(FileCandidate.file_id == file_id).order_by(File.received_at, File.id)))


def candidate_view(c: File) -> dict[str, str]:
    """A candidate as the file-held event and the operator views list it."""
    return {"file_id": c.id, "original_name": c.original_name, "carrier": c.carrier, "channel": c.channel,
            "received_at": c.received_at.isoformat(), "status": c.status}


def build_loop(runtime: Runtime) -> ServiceLoop:
    dedupe = Dedupe(runtime)
    s = runtime.settings
    return ServiceLoop(
        service="dedupe", namespace=s.namespace, bootstrap=s.bootstrap, database=runtime.database,
        visibility_timeout=s.visibility_timeout_seconds,
        producer=runtime.producer,
        handlers={Topic.FILE_ARRIVED: dedupe.on_file_arrived, Topic.ADMIN_COMMANDS: dedupe.on_admin_command},
    )
