"""The idempotent producer: acks=all, enable.idempotence, delivery checked at flush.

Failures are told apart at this boundary: an event the broker refuses for what it is (too
large, invalid) raises ``EventRefusedError`` (the message that caused it is dead-lettered);
anything about the broker's state (unreachable, timed out, leader moving) raises
``BrokerError`` (retried)."""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from cdrflow.bus.kafkalog import client_logging
from cdrflow.bus.topics import RECORD_MESSAGE_BYTES, RECORD_SUFFIXES
from cdrflow.errors import BrokerError, EventRefusedError
from cdrflow.events import Event

MAX_MESSAGE_BYTES = 1_000_000
"""Largest message on a file-level topic: under the broker's default (1,048,588 bytes)."""
MAX_RECORD_MESSAGE_BYTES = RECORD_MESSAGE_BYTES - 64 * 1024
"""Largest message on a record-level topic (their limit, less room for the record batch header)."""

REFUSED = {
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.INVALID_MSG,
    KafkaError.INVALID_RECORD,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_MSG_SIZE,
}
"""Errors about the message itself: sending it again can never succeed."""

STRUCTURED_HEADERS = [("content-type", b"application/cloudevents+json; charset=utf-8")]
"""Every message is a CloudEvent in the Kafka protocol binding's structured content mode: the
whole event (attributes and data) is the JSON value, and this header says so, so a consumer
with a CloudEvents SDK reads it back as an event (docs/events.md)."""


class EventProducer:
    """Produces events; ``flush()`` raises if any send since the last flush failed."""

    def __init__(self, bootstrap: str, client_id: str = "cdrflow") -> None:
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "client.id": client_id,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "compression.type": "lz4",
                "message.max.bytes": RECORD_MESSAGE_BYTES,
            } | client_logging(client_id)
        )
        self._failures: list[str] = []
        self._refused: list[str] = []

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            return
        text = f"{msg.topic()}: {err.str()}"
        (self._refused if err.code() in REFUSED else self._failures).append(text)

    def send(self, topic: str, key: str, event: Event) -> None:
        self.send_raw(topic, key, event.to_bytes())

    @staticmethod
    def check_size(payload: bytes, topic: str) -> None:
        """Refuse, before anything is sent, an event the broker would refuse for its size."""
        limit = MAX_RECORD_MESSAGE_BYTES if topic.endswith(RECORD_SUFFIXES) else MAX_MESSAGE_BYTES
        if len(payload) > limit:
            raise EventRefusedError(f"event for {topic} is {len(payload):,} bytes: at most {limit:,} "
                                    "(a record-level event is split to fit; a file-level one this large is a bug)")

    def send_raw(self, topic: str, key: str | bytes | None, payload: bytes) -> None:
        self.check_size(payload, topic)
        while True:
            try:
                self._producer.produce(topic, payload, key=key, headers=STRUCTURED_HEADERS,
                                       on_delivery=self._on_delivery)
                break
            except BufferError:
                # The local queue is full: let librdkafka deliver some, then try again.
                self._producer.poll(0.5)
            except KafkaException as exc:
                if exc.args[0].code() in REFUSED:
                    raise EventRefusedError(f"broker client refuses the event for {topic}: {exc.args[0].str()}") from exc
                raise BrokerError(f"can't produce to {topic}: {exc}") from exc
        self._producer.poll(0)

    def flush(self, timeout: float = 60, stopping: Callable[[], bool] | None = None) -> None:
        """Wait until every event sent so far is acknowledged by all in-sync replicas.

        ``stopping`` is asked between short waits, so a service told to stop while the broker
        is down stops within a second instead of waiting out ``timeout``."""
        deadline = time.monotonic() + timeout
        remaining = len(self._producer)
        while remaining:
            left = deadline - time.monotonic()
            if left <= 0 or (stopping is not None and stopping()):
                break
            remaining = self._producer.flush(min(left, 0.5))
        refused, failures = self._refused, self._failures
        self._refused, self._failures = [], []
        if refused:
            raise EventRefusedError("broker refused event(s): " + "; ".join(refused[:5]))
        if remaining:
            why = "stopping" if stopping is not None and stopping() else f"within {timeout:g}s"
            raise BrokerError(f"{remaining} event(s) not acknowledged by the broker ({why})")
        if failures:
            raise BrokerError("broker failed to take event(s): " + "; ".join(failures[:5]))
