"""Where every arriving file ends, whichever way it came (upload, collector, mail):
stored in the file store, then announced by one file-arrived event."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from cdrflow.db.models import Carrier
from cdrflow.errors import InputError, UnknownCarrierError
from cdrflow.events import Event, EventType
from cdrflow.filestore import StoredFile

KINDS = ("cdr", "sdr")
PERIODS = ("daily", "monthly")
DIRECTIONS = ("outbound", "inbound")
CHANNELS = ("upload", "collector", "mailgate")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class FileMetadata:
    """What the sender tells us about a file (or what collection rules work out)."""

    carrier: str
    kind: str
    period: str
    direction: str
    original_name: str
    channel: str

    def check(self, session: Session) -> None:
        """Refuse metadata that would send the file nowhere; raise before anything is announced."""
        for field_name, value, allowed in (("kind", self.kind, KINDS), ("period", self.period, PERIODS),
                                           ("direction", self.direction, DIRECTIONS),
                                           ("channel", self.channel, CHANNELS)):
            if value not in allowed:
                raise InputError(f"{field_name} {value!r} is not one of {', '.join(allowed)}")
        if session.get(Carrier, self.carrier) is None:
            raise UnknownCarrierError(self.carrier)


def safe_name(name: str) -> str:
    """The last path component, with anything outside [A-Za-z0-9._-] replaced: '../../x' → 'x'."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _SAFE_NAME.sub("_", base).strip("._") or "unnamed"
    return cleaned[:200]


def file_arrived(stored: StoredFile, meta: FileMetadata, source: str, details: dict[str, Any] | None = None,
                 file_id: str | None = None) -> Event:
    """The file-arrived event for a file now in the store. Each arrival is a new file id:
    random for an upload, or derived from where the file came from (``file_id``) when a
    gateway may announce the same arrival again after a crash."""
    file_id = file_id or str(uuid.uuid4())
    return Event(
        type=EventType.FILE_ARRIVED,
        source=source,
        subject=file_id,
        id=file_id,
        data={
            "file_id": file_id,
            "fingerprint": stored.fingerprint,
            "size": stored.size,
            "carrier": meta.carrier,
            "kind": meta.kind,
            "period": meta.period,
            "direction": meta.direction,
            "original_name": meta.original_name,
            "channel": meta.channel,
            "received_at": datetime.now(UTC).isoformat(),
            "details": details or {},
        },
    )
