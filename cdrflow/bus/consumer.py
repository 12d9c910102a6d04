"""The service loop: consume, handle in one database transaction, commit, publish, checkpoint.

Delivery is at-least-once and every handler is idempotent, so the only thing
the loop must get right is the *order* of its steps (see ``_checkpoint``).

Why publish-after-commit and not an outbox for every event: both keep the order "state
committed before anyone hears of it". An outbox writes every event's bytes into the database
and reads them back (a million-call file is ~100 MB of batches through the database twice),
where the spool keeps them in memory or a temporary file for the seconds between commit and
acknowledgement. What the outbox adds, surviving a crash between commit and publish, the
handler contract gives already: the message is read again and the handler re-yields the same
events with the same ids from committed state. ``bench/bench_checkpoint.py`` measures both.
The outbox stays where no message would be read again: operator requests (an upload, a
billing run, a replay) and invoice-issued, which leaves the system.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message
from sqlalchemy.orm import Session

from cdrflow.bus.deadletter import Failure, dead_letter_event, record_dead_letter
from cdrflow.bus.kafkalog import client_logging
from cdrflow.bus.producer import EventProducer
from cdrflow.bus.spool import Spool
from cdrflow.bus.topics import Topic, dead_letter_name, topic_name
from cdrflow.db import Database
from cdrflow.errors import BrokerError, EventRefusedError, InfrastructureError, NotYetVisibleError
from cdrflow.events import Event
from cdrflow.log import get_logger
from cdrflow.stopping import STOP_GRACE_S, exit_if_not_stopped_in

log = get_logger(__name__)

MAX_BACKOFF_S = 30.0
VISIBILITY_TIMEOUT_S = 60.0
"""How long an event naming state this service can't see is retried before it is dead-lettered."""


@dataclass(frozen=True)
class Outgoing:
    """An event a handler wants published, with its topic and partition key."""

    topic: Topic
    key: str
    event: Event


class _Retract:
    """Yielded by a handler to take back every event it yielded so far for this message (a
    file that fails half-way must not announce its first batches). Nothing was sent yet:
    events wait in the spool until the transaction commits."""

    def __repr__(self) -> str:
        return "RETRACT"


RETRACT = _Retract()

Handler = Callable[[Event, Session], Iterable["Outgoing | _Retract"]]
"""Handles one event inside one database transaction; yields the events it causes.

Handlers must be idempotent and deterministic given committed state: the same
message may arrive again after a crash at any step, and must then yield the same
events with the same ids (nothing it yielded before may be assumed published)."""

BatchHandler = Callable[[list[Event], Session], Iterable["Outgoing | _Retract"]]
"""Handles several events of one topic inside one database transaction, as if each had been
handled alone in the order given (the same contract as ``Handler``). The loop hands it the
messages of its topic that are already fetched, up to ``batch_size``; when the batch fails
for a reason that is a message's fault, each message is handled alone (``[event]``), so only
the guilty one is dead-lettered. A ``RETRACT`` takes back everything the batch yielded."""

BATCH_SIZE = 200
"""Most messages handed to a batch handler at once (each is one billing run for the invoicer)."""


class _Stop(Exception):
    """The service was told to stop in the middle of a message; it repeats after the restart."""


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
        batch_handlers: dict[Topic, BatchHandler] | None = None,
        batch_size: int = BATCH_SIZE,
        producer: EventProducer | None = None,
        on_idle: Callable[[], None] | None = None,
        poll_timeout: float = 0.5,
        visibility_timeout: float = VISIBILITY_TIMEOUT_S,
    ) -> None:
        self.service = service
        self.namespace = namespace
        self.database = database
        self.producer = producer or EventProducer(bootstrap, client_id=f"{namespace}.{service}")
        self.on_idle = on_idle
        self.poll_timeout = poll_timeout
        self.visibility_timeout = visibility_timeout
        self.batch_size = batch_size
        batch_handlers = batch_handlers or {}
        self._batches = {topic_name(namespace, t): h for t, h in batch_handlers.items()}
        self._handlers = {topic_name(namespace, t): (t, h) for t, h in handlers.items()} | {
            topic_name(namespace, t): (t, _one_at_a_time(h)) for t, h in batch_handlers.items()}
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
                # Range shares out each topic's partitions on its own: a service reading two topics
                # (the parser's file-accepted and file-parts) gets a share of both in every instance.
                # The sticky assignors balance the total count only, and gave one parser every
                # partition of file-parts and the other none (bench_pipeline, two instances).
                "partition.assignment.strategy": "range",
                "session.timeout.ms": 10000,
                "heartbeat.interval.ms": 1000,
                "max.poll.interval.ms": 600000,
            } | client_logging(f"{namespace}.{service}")
        )
        self._stopping = threading.Event()

    def stop(self, *_: Any) -> None:
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def install_signal_handlers(self) -> None:
        def on_signal(*_: Any) -> None:
            exit_if_not_stopped_in(STOP_GRACE_S)
            self.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def run(self) -> None:
        self._consumer.subscribe(list(self._handlers))
        log.info("service_started", topics=sorted(self._handlers))
        try:
            while not self.stopping:
                msg = self._consumer.poll(self.poll_timeout)
                if msg is None:
                    self._idle()
                    continue
                if msg.error():
                    self._on_consumer_error(msg.error())
                    continue
                if msg.topic() in self._batches:
                    self._process_batches([msg, *self._consumer.consume(num_messages=self.batch_size - 1, timeout=0)])
                else:
                    self._process_with_retry(msg)
                self._idle()
        finally:
            self._close()
            log.info("service_stopped")

    # --- one message ---------------------------------------------------------

    def _process_batches(self, messages: list[Message]) -> None:
        """Messages fetched together, in the order fetched (each partition's order kept): each
        run of consecutive messages of one batch topic handled as one batch, anything else alone."""
        run: list[Message] = []
        for msg in messages:
            if run and msg.topic() != run[0].topic():
                self._process_batch_with_retry(run)
                run = []
            if msg.error():
                self._on_consumer_error(msg.error())
            elif msg.topic() in self._batches:
                run.append(msg)
            else:
                self._process_with_retry(msg)
            if self.stopping:
                return
        if run:
            self._process_batch_with_retry(run)

    def _process_batch_with_retry(self, messages: list[Message]) -> None:
        """A batch, retried like one message on infrastructure failures. A batch that fails for
        any other reason, an event not yet visible included, is handled again one message at a
        time, so each message meets its own fate (dead letter, visibility wait) alone."""
        if len(messages) == 1:
            self._process_with_retry(messages[0])
            return
        backoff = 0.5
        while not self.stopping:
            try:
                self._checkpoint_batch(messages)
                return
            except _Stop:
                return
            except InfrastructureError as exc:
                self._log_retry(messages[0], exc, backoff)
            except Exception as exc:  # noqa: BLE001 - a message's fault, or one not yet visible: find which
                log.info("batch_split", topic=messages[0].topic(), messages=len(messages),
                         error_type=type(exc).__name__, error=str(exc)[:300])
                for msg in messages:
                    self._process_with_retry(msg)
                    if self.stopping:
                        return
                return
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _checkpoint_batch(self, messages: list[Message]) -> None:
        """``_checkpoint``'s steps for several messages of one topic: every event decoded, one
        transaction for all, commit, publish and flush, then every offset stored. An
        undecodable message raises, and the batch is taken apart by the caller."""
        handler = self._batches[messages[0].topic()]
        events = [Event.from_bytes(msg.value()) for msg in messages]
        self._handle_and_publish(lambda session: handler(events, session))
        for msg in messages:
            self._store_offset(msg)

    def _handle_and_publish(self, handle: Callable[[Session], Iterable[Outgoing | _Retract]]) -> None:
        """Steps 2 to 4 of ``_checkpoint``: ``handle`` in one transaction, its events spooled,
        the commit, then every event published and the producer flushed. Told to stop on the
        way, it raises ``_Stop`` (the message repeats after the restart)."""
        spool = Spool()
        try:
            with self.database.transaction() as session:
                self._spool(handle(session), spool)
            for name, key, payload in spool:
                self.producer.send_raw(name, key, payload)
            self.producer.flush(stopping=lambda: self.stopping)
        except (InfrastructureError, _Stop):
            if self.stopping:
                raise _Stop from None
            raise
        finally:
            spool.close()

    def _spool(self, outgoing: Iterable[Outgoing | _Retract], spool: Spool) -> None:
        """Hold each event a handler yields (checked against the broker's size limit) in
        ``spool`` until the commit; a ``RETRACT`` empties it."""
        for out in outgoing:
            if out is RETRACT:
                spool.clear()
                continue
            assert isinstance(out, Outgoing)
            payload = out.event.to_bytes()
            self.producer.check_size(payload, topic_name(self.namespace, out.topic))
            spool.add(topic_name(self.namespace, out.topic), out.key, payload)
            if self.stopping:
                raise _Stop

    def _process_with_retry(self, msg: Message) -> None:
        """Infrastructure failures (database, broker, file store) are retried with backoff,
        never dead-lettered: the message is fine, the world is not. The one exception is an
        event naming state this service still can't see after ``visibility_timeout``: that is
        dead-lettered with the reason, so the partition never waits on it forever."""
        backoff = 0.5
        first_unseen: float | None = None
        while not self.stopping:
            try:
                self._checkpoint(msg)
                return
            except _Stop:
                return
            except NotYetVisibleError as exc:
                first_unseen = first_unseen or time.monotonic()
                waited = time.monotonic() - first_unseen
                if waited >= self.visibility_timeout:
                    self._give_up(msg, NotYetVisibleError(f"{exc} (still not there after {waited:.0f}s)"))
                    return
                self._log_retry(msg, exc, backoff)
            except InfrastructureError as exc:
                self._log_retry(msg, exc, backoff)
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _log_retry(self, msg: Message, exc: Exception, backoff: float) -> None:
        log.warning("retrying_after_infrastructure_error", topic=msg.topic(), partition=msg.partition(),
                    offset=msg.offset(), error_type=type(exc).__name__, error=str(exc)[:500], retry_in_s=backoff)

    def _checkpoint(self, msg: Message) -> None:
        """Process one message to completion. The steps, in this order:

        1. decode the event envelope (an undecodable message is dead-lettered);
        2. run the handler in one database transaction; each event it yields is
           serialised and checked against the broker's size limit (an event too large
           is this message's fault: the transaction rolls back and the message is
           dead-lettered) and held in a spool, *not* sent;
        3. commit the transaction;
        4. publish the spooled events and flush the producer: every one acknowledged
           by the broker (acks=all);
        5. store the message's offset, so the background commit may include it.

        Nothing downstream can hear of state before it is committed (3 before 4), and
        the offset never moves past work whose events are not acknowledged (4 before 5).
        A crash between any two steps repeats the message from step 1: the handler
        re-yields the same events with the same ids, and every effect is keyed, so
        repeats are no-ops. A failure in 4 that is the event's fault (the broker refuses
        it) dead-letters the message; one that is the broker's is retried from step 1.
        """
        _, handler = self._handlers[msg.topic()]
        event: Event | None = None
        try:
            event = Event.from_bytes(msg.value())  # 1
            decoded = event
            self._handle_and_publish(lambda session: handler(decoded, session))  # 2 to 4
        except (InfrastructureError, _Stop):
            raise
        except Exception as exc:  # noqa: BLE001 - anything else is this message's fault
            self._give_up(msg, exc, event)
            return
        self._store_offset(msg)  # 5

    def _give_up(self, msg: Message, exc: Exception, event: Event | None = None) -> None:
        """Dead-letter the message and store its offset: the stream goes on. The steps:
        keep the letter and fail its file (one transaction), publish it on the dead-letter
        topic, flush, store the offset. A failure of the first three is retried like any
        infrastructure failure (the letter is kept once, whatever the repeats)."""
        topic, _ = self._handlers[msg.topic()]
        if event is None:
            try:
                event = Event.from_bytes(msg.value())
            except Exception:  # noqa: BLE001 - undecodable: the letter carries the raw payload
                event = None
        failure = Failure(service=self.service, topic=msg.topic(), partition=msg.partition(), offset=msg.offset(),
                          key=msg.key(), payload=msg.value() or b"", error=exc, event=event)
        with self.database.transaction() as session:
            letter_id = record_dead_letter(session, failure)
        log.error("message_dead_lettered", topic=msg.topic(), partition=msg.partition(), offset=msg.offset(),
                  dead_letter_id=letter_id, file_id=failure.file_id, error_type=type(exc).__name__,
                  error=failure.error_text[:500])
        letter = dead_letter_event(failure, letter_id)
        self.producer.send(dead_letter_name(self.namespace, topic), failure.where, letter)
        self.producer.flush(stopping=lambda: self.stopping)
        self._store_offset(msg)

    def _store_offset(self, msg: Message) -> None:
        """Mark ``msg`` done. If a rebalance moved its partition to another instance meanwhile,
        the offset can't be stored here: that instance repeats the message, and a repeat
        changes nothing (every effect is keyed), so the work is neither lost nor doubled."""
        try:
            self._consumer.store_offsets(message=msg)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._STATE:
                raise
            log.info("offset_not_stored_partition_moved", topic=msg.topic(), partition=msg.partition(),
                     offset=msg.offset())

    # --- housekeeping ----------------------------------------------------------

    def _idle(self) -> None:
        if self.on_idle is None or self.stopping:
            return
        try:
            self.on_idle()
        except (InfrastructureError, EventRefusedError) as exc:
            log.warning("idle_task_failed", error_type=type(exc).__name__, error=str(exc)[:500])

    def _on_consumer_error(self, error: KafkaError) -> None:
        if error.fatal():
            raise BrokerError(f"fatal consumer error: {error.str()}")
        log.warning("consumer_error", error=error.str())

    def _close(self) -> None:
        """Commit the stored offsets and leave the group, in the background of a watchdog:
        with the broker down either can block, and a stop must not wait on the broker."""
        def close() -> None:
            try:
                self._consumer.commit(asynchronous=False)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError._NO_OFFSET:
                    log.warning("final_commit_failed", error=str(exc))
            self._consumer.close()

        closer = threading.Thread(target=close, name="consumer-close", daemon=True)
        closer.start()
        closer.join(STOP_GRACE_S - 1)
        if closer.is_alive():
            log.warning("consumer_close_abandoned", reason="broker unreachable", after_s=STOP_GRACE_S - 1)


def _one_at_a_time(handler: BatchHandler) -> Handler:
    """A batch handler as the handler of one event (a batch taken apart, a lone message)."""
    return lambda event, session: handler([event], session)
