"""A message a service can't process: kept (table ``dead_letters``, for ``cdrflow dlq``),
published on its topic's dead-letter topic, and shown on the file it was about.

Nothing is lost and nothing waits: the stream goes on, the file says why it stopped, and an
operator can replay the message once the cause is fixed.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cdrflow.db.models import DeadLetter, File
from cdrflow.db.upsert import insert_new
from cdrflow.events import Event, EventType, event_id
from cdrflow.reasons import shorten

IN_FLIGHT = ("arrived", "accepted", "parsed")
"""File statuses a dead letter moves to ``failed``: the file was on its way and now stops.
A file already rated, held or discarded keeps its status (the letter is listed all the same)."""


@dataclass(frozen=True)
class Failure:
    """Where a message was read, what it carried and why it can't be processed."""

    service: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    payload: bytes
    error: Exception
    event: Event | None

    @property
    def where(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"

    @property
    def file_id(self) -> str | None:
        if self.event is None:
            return None
        file_id = self.event.data.get("file_id")
        return file_id if isinstance(file_id, str) and len(file_id) <= 36 else None

    @property
    def error_text(self) -> str:
        return shorten(str(self.error) or repr(self.error)) or ""


def record_dead_letter(session: Session, failure: Failure) -> int:
    """Keep the letter (once, however often the same message fails) and fail its file. Returns its id."""
    now = datetime.now(UTC)
    insert_new(session, DeadLetter.__table__, [{
        "service": failure.service, "topic": failure.topic, "partition": failure.partition,
        "offset": failure.offset, "key": failure.key.decode("utf-8", "replace") if failure.key else None,
        "event_id": failure.event.id[:200] if failure.event else None,
        "event_type": failure.event.type[:200] if failure.event else None,
        "file_id": failure.file_id, "error_type": type(failure.error).__name__, "error": failure.error_text,
        "payload": failure.payload, "failed_at": now,
    }], key=("service", "topic", "partition", "offset"))
    letter_id = session.scalar(select(DeadLetter.id).where(
        DeadLetter.service == failure.service, DeadLetter.topic == failure.topic,
        DeadLetter.partition == failure.partition, DeadLetter.offset == failure.offset))
    assert letter_id is not None
    if failure.file_id is not None:
        file = session.get(File, failure.file_id)
        if file is not None and file.status in IN_FLIGHT:
            session.execute(update(DeadLetter).where(DeadLetter.id == letter_id, DeadLetter.file_status.is_(None))
                            .values(file_status=file.status))
            file.status = "failed"
            file.status_reason = (f"{failure.service} could not process its {failure.event.type if failure.event else 'event'}"
                                  f" {letter_mark(letter_id)}: {failure.error_text}")
            file.updated_at = now
    return letter_id


def letter_mark(letter_id: int) -> str:
    """How a file's status reason names the letter that failed it."""
    return f"(dead letter {letter_id})"


def payload_as_text(payload: bytes) -> tuple[str, str]:
    """The payload as JSON can carry it, and how: ``utf-8`` as it is, else ``base64``."""
    try:
        return payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(payload).decode("ascii"), "base64"


def dead_letter_event(failure: Failure, letter_id: int | None) -> Event:
    """The event on the dead-letter topic: the error and the original payload, as it came."""
    text, encoding = payload_as_text(failure.payload)
    return Event(
        type=EventType.DEAD_LETTERED,
        source=f"cdrflow/{failure.service}",
        subject=failure.where,
        id=event_id(EventType.DEAD_LETTERED, failure.service, failure.where),
        data={
            "service": failure.service,
            "topic": failure.topic,
            "partition": failure.partition,
            "offset": failure.offset,
            "key": failure.key.decode("utf-8", "replace") if failure.key else None,
            "dead_letter_id": letter_id,
            "file_id": failure.file_id,
            "error_type": type(failure.error).__name__,
            "error": failure.error_text,
            "payload": text,
            "payload_encoding": encoding,
            "failed_at": datetime.now(UTC).isoformat(),
        },
    )
