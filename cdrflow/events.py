"""The one event envelope: CloudEvents 1.0 attributes, serialised with orjson.

``type`` carries the version (``cdrflow.file.arrived.v1``); ``subject`` is the
thing the event is about (a file id, an invoice number). Event ids are derived
deterministically from what the event is about, so an event re-emitted after a
crash has the same id as the first emission and consumers can tell.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from cdrflow.errors import BadEventError

SPECVERSION = "1.0"
_ID_NAMESPACE = uuid.UUID("6f1c1a52-9a53-4d55-9d7f-2c0f6f0f5a11")


class EventType:
    """Every event type cdrflow emits: past tense, versioned."""

    FILE_ARRIVED = "cdrflow.file.arrived.v1"
    FILE_HELD = "cdrflow.file.held.v1"
    FILE_ACCEPTED = "cdrflow.file.accepted.v1"
    FILE_PART = "cdrflow.file.part.v1"
    RECORD_PARSED = "cdrflow.record.parsed.v2"
    CALL_RATED = "cdrflow.call.rated.v2"
    RUN_CLOSED = "cdrflow.run.closed.v1"
    INVOICE_ISSUED = "cdrflow.invoice.issued.v1"
    CREDIT_NOTE_ISSUED = "cdrflow.credit-note.issued.v1"
    ADMIN_COMMAND = "cdrflow.admin.command.v1"
    DEAD_LETTERED = "cdrflow.message.dead-lettered.v1"


def event_id(*parts: object) -> str:
    """A stable id for the event that ``parts`` identify (same parts, same id)."""
    return str(uuid.uuid5(_ID_NAMESPACE, "|".join(str(p) for p in parts)))


@dataclass(frozen=True)
class Event:
    type: str
    source: str  # "cdrflow/<service>"
    subject: str
    data: dict[str, Any]
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    time: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_dict(self) -> dict[str, Any]:
        return {
            "specversion": SPECVERSION,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "time": self.time.isoformat(),
            "subject": self.subject,
            "datacontenttype": "application/json",
            "data": self.data,
        }

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_bytes(cls, payload: bytes | None) -> Event:
        """Decode and check the envelope; a bad payload raises BadEventError (dead-lettered)."""
        if not payload:
            raise BadEventError("empty message: no event envelope")
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise BadEventError(f"message is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise BadEventError("message is JSON but not an event envelope object")
        missing = [k for k in ("specversion", "id", "source", "type", "time", "data") if k not in doc]
        if missing:
            raise BadEventError(f"event envelope lacks {', '.join(missing)}")
        if doc["specversion"] != SPECVERSION:
            raise BadEventError(f"unsupported CloudEvents specversion {doc['specversion']!r}")
        if not isinstance(doc["data"], dict):
            raise BadEventError("event data must be a JSON object")
        try:
            time = datetime.fromisoformat(doc["time"])
        except (TypeError, ValueError) as exc:
            raise BadEventError(f"event time {doc['time']!r} is not ISO 8601") from exc
        return cls(
            type=doc["type"],
            source=doc["source"],
            subject=doc.get("subject", ""),
            data=doc["data"],
            id=doc["id"],
            time=time,
        )

    def require(self, *keys: str) -> None:
        """Check data carries ``keys``; a missing one makes the event unprocessable."""
        missing = [k for k in keys if k not in self.data]
        if missing:
            raise BadEventError(f"{self.type} event {self.id} lacks data field(s): {', '.join(missing)}")
