"""The transactional outbox: an event is written in the same database transaction as the state
it announces (or the operator request it accepts), then published by its publisher's relay.

Used where a reply or an effect must not depend on the broker being up: file-arrived for an
upload, run-closed for a billing run, a dead letter's replay (all published by the admin
service's relay), and invoice-issued, which leaves the system (the invoicer's relay).

Publishing is at-least-once: a crash after the broker acknowledged an entry but before it
was marked published sends it again, with the same event id.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cdrflow.bus.producer import EventProducer
from cdrflow.db import Database
from cdrflow.db.models import OutboxEntry
from cdrflow.errors import InfrastructureError
from cdrflow.events import Event
from cdrflow.log import get_logger

log = get_logger(__name__)


def add_to_outbox(session: Session, topic: str, key: str, event: Event, *, publisher: str = "invoicer") -> None:
    """Queue ``event`` for ``publisher``'s relay; it commits or rolls back with ``session``."""
    add_raw_to_outbox(session, topic, key, event.to_bytes(), entry_id=event.id, publisher=publisher)


def add_raw_to_outbox(session: Session, topic: str, key: str | None, payload: bytes, *, entry_id: str,
                      publisher: str) -> None:
    """Queue a payload as it is (a dead letter's original message); ``entry_id`` is the entry's
    unique key (at most 36 characters), so queueing the same thing twice fails instead of sending twice."""
    session.add(OutboxEntry(event_id=entry_id, topic=topic, key=key or "", payload=payload,
                            created_at=datetime.now(UTC), publisher=publisher))


def is_published(session: Session, entry_id: str) -> bool:
    return session.scalar(select(OutboxEntry.published_at.is_not(None)).where(OutboxEntry.event_id == entry_id)) or False


class OutboxRelay:
    """Publishes one publisher's pending entries in creation order."""

    def __init__(self, database: Database, producer: EventProducer | Callable[[], EventProducer], *,
                 publisher: str = "invoicer", batch: int = 200) -> None:
        self.database = database
        self._producer = producer
        self.publisher = publisher
        self.batch = batch

    @property
    def producer(self) -> EventProducer:
        """The producer, made on first use (a process with nothing to publish never connects)."""
        if not hasattr(self._producer, "send_raw"):  # a factory, not a producer yet
            self._producer = self._producer()  # type: ignore[operator]
        return self._producer

    def publish_pending(self, timeout: float = 30) -> int:
        """Publish unpublished entries in creation order. The steps, in this order, in one transaction:
        1. read and lock a batch of this publisher's pending entries (PostgreSQL: ``FOR UPDATE SKIP
           LOCKED``, so two relays of one publisher, e.g. two schedulers, take different entries);
        2. produce each;
        3. flush: every one acknowledged by the broker (acks=all), or BrokerError and nothing marked;
        4. mark them published, and commit.
        A crash between 3 and 4 publishes them again, with the same event ids."""
        with self.database.transaction() as session:
            entries = session.execute(
                select(OutboxEntry.id, OutboxEntry.topic, OutboxEntry.key, OutboxEntry.payload)
                .where(OutboxEntry.publisher == self.publisher, OutboxEntry.published_at.is_(None))
                .order_by(OutboxEntry.id).limit(self.batch).with_for_update(skip_locked=True)
            ).all()
            if not entries:
                return 0
            for _, topic, key, payload in entries:
                self.producer.send_raw(topic, key or None, payload)
            self.producer.flush(timeout)
            session.execute(
                update(OutboxEntry).where(OutboxEntry.id.in_([e.id for e in entries]))
                .values(published_at=datetime.now(UTC))
            )
        return len(entries)


class RelayThread:
    """Runs a relay in the background of a process that has no service loop (the admin API):
    publishes whenever woken (after a commit) and every ``interval`` seconds otherwise, so an
    entry written while the broker was down goes out once it is back, and one left by a crash
    goes out after the restart."""

    def __init__(self, relay: OutboxRelay, interval: float = 1.0) -> None:
        self.relay = relay
        self.interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._published = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"outbox-{relay.publisher}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def wake(self) -> None:
        self._wake.set()

    def wait_published(self, entry_id: str, timeout: float) -> bool:
        """Wake the relay and wait up to ``timeout`` s for ``entry_id`` to be acknowledged."""
        self.wake()
        end = time.monotonic() + timeout
        while True:
            with self.relay.database.transaction() as session:
                if is_published(session, entry_id):
                    return True
            remaining = end - time.monotonic()
            if remaining <= 0:
                return False
            with self._published:
                self._published.wait(min(remaining, 0.25))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                while self.relay.publish_pending(timeout=5) and not self._stop.is_set():
                    with self._published:
                        self._published.notify_all()
                with self._published:
                    self._published.notify_all()
            except InfrastructureError as exc:
                log.warning("outbox_publish_failed", publisher=self.relay.publisher, error=str(exc)[:500])
            except Exception as exc:  # noqa: BLE001 - the relay must outlive any one bad entry
                log.error("outbox_relay_error", publisher=self.relay.publisher, error_type=type(exc).__name__,
                          error=str(exc)[:500])
            self._wake.wait(self.interval)
            self._wake.clear()
