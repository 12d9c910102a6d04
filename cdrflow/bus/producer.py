"""The idempotent producer: acks=all, enable.idempotence, delivery checked at flush."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from cdrflow.errors import BrokerError
from cdrflow.events import Event


class EventProducer:
    """Produces events; ``flush()`` raises BrokerError if any send since the last flush failed."""

    def __init__(self, bootstrap: str, client_id: str = "cdrflow") -> None:
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "client.id": client_id,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "compression.type": "lz4",
                "message.max.bytes": 4_000_000,
            }
        )
        self._failures: list[str] = []

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failures.append(f"{msg.topic()}: {err.str()}")

    def send(self, topic: str, key: str, event: Event) -> None:
        self.send_raw(topic, key, event.to_bytes())

    def send_raw(self, topic: str, key: str | bytes | None, payload: bytes) -> None:
        while True:
            try:
                self._producer.produce(topic, payload, key=key, on_delivery=self._on_delivery)
                break
            except BufferError:
                # The local queue is full: let librdkafka deliver some, then try again.
                self._producer.poll(0.5)
            except KafkaException as exc:
                raise BrokerError(f"can't produce to {topic}: {exc}") from exc
        self._producer.poll(0)

    def flush(self, timeout: float = 60) -> None:
        """Wait until every event sent so far is acknowledged by all in-sync replicas."""
        remaining = self._producer.flush(timeout)
        failures, self._failures = self._failures, []
        if remaining:
            raise BrokerError(f"{remaining} event(s) not acknowledged by the broker within {timeout}s")
        if failures:
            raise BrokerError("broker refused event(s): " + "; ".join(failures[:5]))
