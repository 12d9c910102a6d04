"""The transactional outbox: events that leave the system are written in the same database
transaction as the state they announce, then published by a relay.

Publishing is at-least-once: a crash after the broker acknowledged an entry but
before it was marked published sends it again, with the same event id.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cdrflow.bus.producer import EventProducer
from cdrflow.db import Database
from cdrflow.db.models import OutboxEntry
from cdrflow.events import Event


def add_to_outbox(session: Session, topic: str, key: str, event: Event) -> None:
    session.add(OutboxEntry(event_id=event.id, topic=topic, key=key, payload=event.to_bytes(),
                            created_at=datetime.now(UTC)))


class OutboxRelay:
    def __init__(self, database: Database, producer: EventProducer, batch: int = 200) -> None:
        self.database = database
        self.producer = producer
        self.batch = batch

    def publish_pending(self) -> int:
        """Publish unpublished entries in creation order. The steps, in this order:
        read a batch; produce each; flush (all acknowledged); mark them published."""
        with self.database.transaction() as session:
            entries = session.execute(
                select(OutboxEntry.id, OutboxEntry.topic, OutboxEntry.key, OutboxEntry.payload)
                .where(OutboxEntry.published_at.is_(None)).order_by(OutboxEntry.id).limit(self.batch)
            ).all()
        if not entries:
            return 0
        for _, topic, key, payload in entries:
            self.producer.send_raw(topic, key, payload)
        self.producer.flush()
        with self.database.transaction() as session:
            session.execute(
                update(OutboxEntry).where(OutboxEntry.id.in_([e.id for e in entries]))
                .values(published_at=datetime.now(UTC))
            )
        return len(entries)
