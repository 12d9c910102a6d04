"""Dedupe service: file-arrived → files table → file-accepted or file-held; admin-commands → release/discard."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from cdrflow.bus import Outgoing, ServiceLoop, Topic
from cdrflow.db.models import File, FileCandidate
from cdrflow.errors import BadEventError
from cdrflow.events import Event, EventType, event_id
from cdrflow.log import get_logger
from cdrflow.runtime import Runtime
from services.dedupe.decision import Held, decide

log = get_logger(__name__)

FILE_FIELDS = ("file_id", "fingerprint", "size", "carrier", "kind", "period", "direction",
               "original_name", "channel", "received_at")


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

    def _record(self, session: Session, d: dict) -> File:
        earlier = list(session.scalars(
            select(File.id).where(File.fingerprint == d["fingerprint"]).order_by(File.received_at, File.id)
        ))
        decision = decide(earlier)
        now = datetime.now(UTC)
        file = File(
            id=d["file_id"], fingerprint=d["fingerprint"], size=d["size"], carrier=d["carrier"],
            kind=d["kind"], period=d["period"], direction=d["direction"],
            original_name=d["original_name"], channel=d["channel"],
            received_at=datetime.fromisoformat(d["received_at"]),
            status="held" if isinstance(decision, Held) else "accepted",
            status_reason=decision.reason if isinstance(decision, Held) else None,
            updated_at=now,
        )
        session.add(file)
        session.flush()
        if isinstance(decision, Held):
            session.add_all(FileCandidate(file_id=file.id, candidate_file_id=c) for c in decision.candidates)
        log.info("file_" + file.status, file_id=file.id, fingerprint=file.fingerprint,
                 original_name=file.original_name)
        return file

    def _announce(self, session: Session, file: File) -> Outgoing:
        if file.status == "held":
            candidates = session.scalars(
                select(File).join(FileCandidate, FileCandidate.candidate_file_id == File.id)
                .where(FileCandidate.file_id == file.id).order_by(File.received_at, File.id)
            ).all()
            data = file.metadata_for_event() | {
                "reason": file.status_reason,
                "candidates": [
                    {"file_id": c.id, "original_name": c.original_name,
                     "received_at": c.received_at.isoformat(), "status": c.status}
                    for c in candidates
                ],
            }
            return self._event(Topic.FILE_HELD, EventType.FILE_HELD, file, data)
        return self._event(Topic.FILE_ACCEPTED, EventType.FILE_ACCEPTED, file, file.metadata_for_event())

    def _event(self, topic: Topic, type_: str, file: File, data: dict) -> Outgoing:
        event = Event(type=type_, source=self.runtime.source, subject=file.id,
                      id=event_id(type_, file.id, file.status_reason or ""), data=data)
        return Outgoing(topic, file.fingerprint, event)

    def on_admin_command(self, event: Event, session: Session) -> Iterator[Outgoing]:
        """release: a held file goes on as accepted; discard: it is kept but never billed."""
        event.require("command", "file_id")
        command, file_id = event.data["command"], event.data["file_id"]
        if command not in ("release", "discard"):
            raise BadEventError(f"unknown admin command {command!r} (expected release or discard)")
        file = session.get(File, file_id)
        if file is None:
            raise BadEventError(f"admin command {command} names unknown file {file_id}")
        if file.status != "held":
            log.info("admin_command_ignored", command=command, file_id=file_id, status=file.status)
            return
        operator = event.data.get("operator") or "operator"
        file.status = "accepted" if command == "release" else "discarded"
        file.status_reason = f"{'released' if command == 'release' else 'discarded'} by {operator}"
        file.updated_at = datetime.now(UTC)
        log.info("file_" + command + "d", file_id=file_id, operator=operator)
        if command == "release":
            yield self._event(Topic.FILE_ACCEPTED, EventType.FILE_ACCEPTED, file,
                              file.metadata_for_event() | {"released": True})


def build_loop(runtime: Runtime) -> ServiceLoop:
    dedupe = Dedupe(runtime)
    s = runtime.settings
    return ServiceLoop(
        service="dedupe", namespace=s.namespace, bootstrap=s.bootstrap, database=runtime.database,
        producer=runtime.producer,
        handlers={Topic.FILE_ARRIVED: dedupe.on_file_arrived, Topic.ADMIN_COMMANDS: dedupe.on_admin_command},
    )
