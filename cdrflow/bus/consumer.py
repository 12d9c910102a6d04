"""The service loop: consume, handle in one database transaction, produce, checkpoint.

Delivery is at-least-once and every handler is idempotent, so the only thing
the loop must get right is the *order* of its steps (see ``_checkpoint``).
"""

from __future__ import annotations

import base64
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message
from sqlalchemy.orm import Session

from cdrflow.bus.producer import EventProducer
from cdrflow.bus.topics import Topic, dead_letter_name, topic_name
from cdrflow.db import Database
from cdrflow.errors import BrokerError, InfrastructureError
from cdrflow.events import Event, EventType, event_id
from cdrflow.log import get_logger

log = get_logger(__name__)

MAX_BACKOFF_S = 30.0


@dataclass(frozen=True)
class Outgoing:
    """An event a handler wants published, with its topic and partition key."""

    topic: Topic
    key: str
    event: Event


Handler = Callable[[Event, Session], Iterable[Outgoing]]
"""Handles one event inside one database transaction; yields the events it causes.

Handlers must be idempotent and deterministic given committed state: the same
message may arrive again after a crash at any step."""


class ServiceLoop:
    """Runs one service's handlers over its topics until SIGTERM/SIGINT or ``stop()``."""

    def __init__(
        self,
        *,
        service: str,
        namespace: str,
        bootstrap: str,
        database: Database,
        handlers: dict[Topic, Handler],
        producer: EventProducer | None = None,
        on_idle: Callable[[], None] | None = None,
        poll_timeout: float = 0.5,
    ) -> None:
        self.service = service
        self.namespace = namespace
        self.database = database
        self.producer = producer or EventProducer(bootstrap, client_id=f"{namespace}.{service}")
        self.on_idle = on_idle
        self.poll_timeout = poll_timeout
        self._handlers = {topic_name(namespace, t): (t, h) for t, h in handlers.items()}
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"{namespace}.{service}",
                "client.id": f"{namespace}.{service}",
                "auto.offset.reset": "earliest",
                # Offsets are stored by hand after each message is fully processed, and
                # committed in the background: the commit never runs ahead of the work.
                "enable.auto.commit": True,
                "enable.auto.offset.store": False,
                "auto.commit.interval.ms": 1000,
                "partition.assignment.strategy": "cooperative-sticky",
                "session.timeout.ms": 10000,
                "heartbeat.interval.ms": 1000,
                "max.poll.interval.ms": 600000,
            }
        )
        self._stopping = False

    def stop(self, *_: Any) -> None:
        self._stopping = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self) -> None:
        self._consumer.subscribe(list(self._handlers))
        log.info("service_started", topics=sorted(self._handlers))
        try:
            while not self._stopping:
                msg = self._consumer.poll(self.poll_timeout)
                if msg is None:
                    self._idle()
                    continue
                if msg.error():
                    self._on_consumer_error(msg.error())
                    continue
                self._process_with_retry(msg)
                self._idle()
        finally:
            self._close()
            log.info("service_stopped")

    # --- one message ---------------------------------------------------------

    def _process_with_retry(self, msg: Message) -> None:
        """Infrastructure failures (database, broker, file store) are retried with backoff,
        never dead-lettered: the message is fine, the world is not."""
        backoff = 0.5
        while not self._stopping:
            try:
                self._checkpoint(msg)
                return
            except InfrastructureError as exc:
                log.warning(
                    "retrying_after_infrastructure_error",
                    topic=msg.topic(), partition=msg.partition(), offset=msg.offset(),
                    error=str(exc), retry_in_s=backoff,
                )
                time.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _checkpoint(self, msg: Message) -> None:
        """Process one message to completion. The steps, in this order:

        1. decode the event envelope (an undecodable message is dead-lettered);
        2. run the handler in one database transaction, producing the events it
           yields as they come, then commit the transaction;
        3. flush the producer: every produced event is acknowledged (acks=all);
        4. store the message's offset, so the background commit may include it.

        A crash between any two steps repeats the message from step 1; events
        repeat with the same ids and every effect is keyed, so repeats are no-ops.
        """
        topic, handler = self._handlers[msg.topic()]
        try:
            event = Event.from_bytes(msg.value())
            with self.database.transaction() as session:
                for out in handler(event, session):
                    self.producer.send(topic_name(self.namespace, out.topic), out.key, out.event)
            self.producer.flush()
        except InfrastructureError:
            raise
        except Exception as exc:  # noqa: BLE001 - anything else is this message's fault
            self._dead_letter(msg, topic, exc)
        self._consumer.store_offsets(message=msg)

    def _dead_letter(self, msg: Message, topic: Topic, exc: Exception) -> None:
        """Park the message with its error on the topic's dead-letter topic; the stream goes on."""
        payload = msg.value() or b""
        try:
            text, encoding = payload.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(payload).decode("ascii"), "base64"
        where = f"{msg.topic()}/{msg.partition()}/{msg.offset()}"
        key = msg.key()
        letter = Event(
            type=EventType.DEAD_LETTERED,
            source=f"cdrflow/{self.service}",
            subject=where,
            id=event_id(EventType.DEAD_LETTERED, self.service, where),
            data={
                "service": self.service,
                "topic": msg.topic(),
                "partition": msg.partition(),
                "offset": msg.offset(),
                "key": key.decode("utf-8", "replace") if key else None,
                "error_type": type(exc).__name__,
                "error": str(exc) or repr(exc),
                "payload": text,
                "payload_encoding": encoding,
                "failed_at": datetime.now(UTC).isoformat(),
            },
        )
        log.error("message_dead_lettered", topic=msg.topic(), offset=msg.offset(),
                  error_type=type(exc).__name__, error=str(exc))
        self.producer.send(dead_letter_name(self.namespace, topic), where, letter)
        self.producer.flush()

    # --- housekeeping ----------------------------------------------------------

    def _idle(self) -> None:
        if self.on_idle is None:
            return
        try:
            self.on_idle()
        except InfrastructureError as exc:
            log.warning("idle_task_failed", error=str(exc))

    def _on_consumer_error(self, error: KafkaError) -> None:
        if error.fatal():
            raise BrokerError(f"fatal consumer error: {error.str()}")
        log.warning("consumer_error", error=error.str())

    def _close(self) -> None:
        try:
            self._consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("final_commit_failed", error=str(exc))
        self._consumer.close()

