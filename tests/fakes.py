"""In-memory stand-ins the unit tests share (the integration suite uses the real parts)."""

from __future__ import annotations

from cdrflow.events import Event


class RecordingProducer:
    """Stands in for the broker at unit level: what was sent, as (topic, key, event)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, object, Event]] = []

    def send(self, topic, key, event):  # type: ignore[no-untyped-def]
        self.sent.append((topic, key, event))

    def send_raw(self, topic, key, payload):  # type: ignore[no-untyped-def]
        """What the admin API's outbox relay sends: the queued event's bytes."""
        self.sent.append((topic, key, Event.from_bytes(payload)))

    def flush(self, timeout=None):  # type: ignore[no-untyped-def]
        return 0
