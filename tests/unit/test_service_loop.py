"""The service loop's checkpoint order, pinned with a fake consumer and producer over SQLite:
events are published only after the handler's transaction commits, the offset is stored only
after they are acknowledged, and a message is dead-lettered (kept, its file failed, the stream
going on) for what is its own fault, retried for what is the world's."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from confluent_kafka import KafkaError, KafkaException
from sqlalchemy import create_engine, func, select, text
from structlog.testing import capture_logs

from cdrflow.bus import RETRACT, Outgoing, Topic
from cdrflow.bus.consumer import ServiceLoop
from cdrflow.bus.producer import MAX_MESSAGE_BYTES
from cdrflow.db import Database, migrate
from cdrflow.db.models import DeadLetter, File
from cdrflow.errors import BrokerError, DatabaseError, EventRefusedError, NotYetVisibleError
from cdrflow.events import Event, EventType
from cdrflow.reasons import REASON_MAX_CHARS

FILE_ID = "11111111-2222-3333-4444-555555555555"


class FakeMessage:
    def __init__(self, topic: str, value: bytes, offset: int = 7) -> None:
        self._topic, self._value, self._offset = topic, value, offset

    def topic(self): return self._topic
    def partition(self): return 0
    def offset(self): return self._offset
    def key(self): return b"k"
    def value(self): return self._value
    def error(self): return None


class Journal:
    """What happened, in order, as the loop's collaborators saw it."""

    def __init__(self, url: str) -> None:
        self.steps: list[str] = []
        self._observer = create_engine(url)  # its own connection: sees only committed rows

    def committed_rows(self) -> int:
        with self._observer.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM files")).scalar_one()


class FakeProducer:
    def __init__(self, journal: Journal, fail_flush: Exception | None = None) -> None:
        self.journal, self.fail_flush = journal, fail_flush
        self.sent: list[tuple[str, bytes]] = []

    @staticmethod
    def check_size(payload: bytes, topic: str) -> None:
        if len(payload) > MAX_MESSAGE_BYTES:
            raise EventRefusedError(f"event for {topic} is {len(payload):,} bytes")

    def send_raw(self, topic, key, payload):
        self.journal.steps.append(f"send (committed rows: {self.journal.committed_rows()})")
        self.sent.append((topic, payload))

    def send(self, topic, key, event):
        self.send_raw(topic, key, event.to_bytes())

    def flush(self, timeout=60, stopping=None):
        self.journal.steps.append("flush")
        if self.fail_flush is not None:
            raise self.fail_flush


class FakeConsumer:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def store_offsets(self, message):
        self.journal.steps.append(f"store offset {message.offset()}")


@pytest.fixture
def database(tmp_path):
    url = f"sqlite:///{tmp_path / 'loop.db'}"
    migrate(url)
    db = Database(url)
    yield db
    db.dispose()


def add_file(session, status="accepted"):
    now = datetime.now(UTC)
    session.add(File(id=FILE_ID, fingerprint="0" * 64, size=1, carrier="gamma", kind="cdr", period="daily",
                     direction="outbound", original_name="f.csv", channel="upload", received_at=now,
                     status=status, updated_at=now))


def make_loop(database, handler, journal, producer=None, **kwargs) -> ServiceLoop:
    loop = ServiceLoop(service="test", namespace="ns", bootstrap="127.0.0.1:1", database=database,
                       handlers={Topic.FILE_ACCEPTED: handler}, producer=producer or FakeProducer(journal), **kwargs)
    loop._consumer.close()
    loop._consumer = FakeConsumer(journal)
    return loop


def an_event(**data) -> bytes:
    return Event(type=EventType.FILE_ACCEPTED, source="cdrflow/test", subject=FILE_ID,
                 data={"file_id": FILE_ID} | data).to_bytes()


def announce(event: Event, session):
    """A handler that records a file and announces it, as the dedupe service does."""
    add_file(session)
    session.flush()
    yield Outgoing(Topic.RECORD_PARSED, FILE_ID, Event(type=EventType.RECORD_PARSED, source="cdrflow/test",
                                                         subject=FILE_ID, data={"n": 1}))


def test_events_are_published_after_the_commit_and_the_offset_stored_after_the_ack(database):
    journal = Journal(database.url)
    loop = make_loop(database, announce, journal)
    loop._checkpoint(FakeMessage("ns.file-accepted", an_event()))
    # The next stage, hearing of the file, must find it: the row is committed before the send.
    assert journal.steps == ["send (committed rows: 1)", "flush", "store offset 7"]


def test_an_unacknowledged_event_leaves_the_offset_where_it_was(database):
    journal = Journal(database.url)
    loop = make_loop(database, announce, journal, producer=FakeProducer(journal, BrokerError("broker down")))
    with pytest.raises(BrokerError):
        loop._checkpoint(FakeMessage("ns.file-accepted", an_event()))
    assert journal.steps == ["send (committed rows: 1)", "flush"]


def test_retracted_events_are_never_sent(database):
    def half_then_fail(event, session):
        add_file(session)
        yield Outgoing(Topic.RECORD_PARSED, FILE_ID, Event(type=EventType.RECORD_PARSED, source="cdrflow/test",
                                                             subject=FILE_ID, data={"batch": 0}))
        yield RETRACT
        session.get(File, FILE_ID).status = "failed"

    journal = Journal(database.url)
    producer = FakeProducer(journal)
    make_loop(database, half_then_fail, journal, producer=producer)._checkpoint(
        FakeMessage("ns.file-accepted", an_event()))
    assert producer.sent == [] and journal.steps == ["flush", "store offset 7"]


def test_a_handler_error_is_dead_lettered_once_with_its_file_failed_and_the_stream_goes_on(database):
    with database.transaction() as session:
        add_file(session)

    def broken(event, session):
        raise ValueError("x" * 50_000_000)
        yield  # pragma: no cover

    journal = Journal(database.url)
    producer = FakeProducer(journal)
    loop = make_loop(database, broken, journal, producer=producer)
    payload = an_event()
    loop._checkpoint(FakeMessage("ns.file-accepted", payload))
    loop._checkpoint(FakeMessage("ns.file-accepted", payload))  # a repeat after a crash
    with database.transaction() as session:
        [letter] = session.scalars(select(DeadLetter)).all()
        file = session.get(File, FILE_ID)
        assert (letter.service, letter.offset, letter.file_id, letter.error_type) == ("test", 7, FILE_ID, "ValueError")
        assert len(letter.error) <= REASON_MAX_CHARS and letter.payload == payload
        assert file.status == "failed"
        assert file.status_reason.startswith(f"test could not process its {EventType.FILE_ACCEPTED} "
                                             f"(dead letter {letter.id}): xxx")
        assert len(file.status_reason) <= REASON_MAX_CHARS
    assert [topic for topic, _ in producer.sent] == ["ns.file-accepted.dead-letter"] * 2
    assert journal.steps[-1] == "store offset 7"


def test_an_event_too_large_for_the_broker_rolls_back_and_dead_letters_the_message(database):
    def too_big(event, session):
        add_file(session)
        yield Outgoing(Topic.RECORD_PARSED, FILE_ID, Event(type=EventType.RECORD_PARSED, source="cdrflow/test",
                                                             subject=FILE_ID, data={"dialled": "9" * 2_000_000}))

    journal = Journal(database.url)
    producer = FakeProducer(journal)
    make_loop(database, too_big, journal, producer=producer)._checkpoint(FakeMessage("ns.file-accepted", an_event()))
    with database.transaction() as session:
        [letter] = session.scalars(select(DeadLetter)).all()
        assert letter.error_type == "EventRefusedError" and "2,000," in letter.error
        assert session.get(File, FILE_ID) is None  # the handler's transaction rolled back
    assert [topic for topic, _ in producer.sent] == ["ns.file-accepted.dead-letter"]


def test_state_not_yet_visible_is_retried_then_dead_lettered_with_the_reason(database):
    calls = []

    def waiting(event, session):
        calls.append(1)
        raise NotYetVisibleError(f"file {FILE_ID} is not in the database")
        yield  # pragma: no cover

    journal = Journal(database.url)
    loop = make_loop(database, waiting, journal, visibility_timeout=1.2)
    loop._process_with_retry(FakeMessage("ns.file-accepted", an_event()))
    assert len(calls) >= 2, "retried before giving up"
    with database.transaction() as session:
        [letter] = session.scalars(select(DeadLetter)).all()
    assert letter.error_type == "NotYetVisibleError" and "still not there after" in letter.error
    assert journal.steps[-1] == "store offset 7"


# --- batch handlers ----------------------------------------------------------------------------


def make_batch_loop(database, batch_handler, journal, producer=None) -> ServiceLoop:
    loop = ServiceLoop(service="test", namespace="ns", bootstrap="127.0.0.1:1", database=database,
                       handlers={Topic.FILE_ACCEPTED: announce}, batch_handlers={Topic.RUN_CLOSED: batch_handler},
                       producer=producer or FakeProducer(journal))
    loop._consumer.close()
    loop._consumer = FakeConsumer(journal)
    return loop


def a_run(customer: str) -> bytes:
    return Event(type=EventType.RUN_CLOSED, source="cdrflow/test", subject=customer,
                 data={"customer": customer}).to_bytes()


def record_runs(seen: list[list[str]]):
    """A batch handler that keeps a file row per run (to see what committed) and announces each."""
    def handle(events, session):
        seen.append([e.data["customer"] for e in events])
        for e in events:
            if e.data["customer"] == "BAD":
                raise ValueError("no such customer BAD")
            now = datetime.now(UTC)
            session.add(File(id=f"{e.data['customer']:0>36}", fingerprint=e.data["customer"].ljust(64, "0"), size=1,
                             carrier="gamma", kind="cdr", period="daily", direction="outbound", original_name="f",
                             channel="upload", received_at=now, status="accepted", updated_at=now))
            yield Outgoing(Topic.INVOICE_ISSUED, e.data["customer"], Event(
                type=EventType.INVOICE_ISSUED, source="cdrflow/test", subject=e.data["customer"], data={}))
    return handle


def test_a_batch_is_one_transaction_published_after_its_commit_with_every_offset_stored_after_the_ack(database):
    journal, seen = Journal(database.url), []
    loop = make_batch_loop(database, record_runs(seen), journal)
    loop._process_batches([FakeMessage("ns.run-closed", a_run(c), offset=o) for o, c in enumerate(["A", "B", "C"])])
    assert seen == [["A", "B", "C"]]  # one call, one transaction
    assert journal.steps == ["send (committed rows: 3)"] * 3 + ["flush", "store offset 0", "store offset 1",
                                                               "store offset 2"]


def test_a_batch_that_fails_by_one_message_is_handled_one_by_one_and_only_that_one_dead_lettered(database):
    journal, seen = Journal(database.url), []
    producer = FakeProducer(journal)
    loop = make_batch_loop(database, record_runs(seen), journal, producer=producer)
    loop._process_batches([FakeMessage("ns.run-closed", a_run(c), offset=o)
                           for o, c in enumerate(["A", "BAD", "C"])])
    assert seen == [["A", "BAD", "C"], ["A"], ["BAD"], ["C"]]
    with database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(File)) == 2  # A and C; the failed batch rolled back
        [letter] = session.scalars(select(DeadLetter)).all()
        assert (letter.offset, letter.error_type) == (1, "ValueError")
    assert [t for t, _ in producer.sent] == ["ns.invoice-issued", "ns.run-closed.dead-letter", "ns.invoice-issued"]
    assert [s for s in journal.steps if s.startswith("store")] == ["store offset 0", "store offset 1",
                                                                   "store offset 2"]


def test_messages_of_other_topics_between_batches_are_handled_alone_and_in_order(database):
    journal, seen = Journal(database.url), []
    loop = make_batch_loop(database, record_runs(seen), journal)
    loop._process_batches([FakeMessage("ns.run-closed", a_run("A"), offset=1),
                           FakeMessage("ns.run-closed", a_run("B"), offset=2),
                           FakeMessage("ns.file-accepted", an_event(), offset=3),
                           FakeMessage("ns.run-closed", a_run("C"), offset=4)])
    assert seen == [["A", "B"], ["C"]]
    assert [s for s in journal.steps if s.startswith("store")] == [f"store offset {n}" for n in (1, 2, 3, 4)]


def test_a_batch_meeting_a_broken_database_is_retried_whole(database):
    journal, seen = Journal(database.url), []
    attempts = []

    def flaky(events, session):
        attempts.append(len(events))
        if len(attempts) == 1:
            raise DatabaseError("database unavailable: connection refused")
        yield from record_runs(seen)(events, session)

    loop = make_batch_loop(database, flaky, journal)
    loop._process_batches([FakeMessage("ns.run-closed", a_run(c), offset=o) for o, c in enumerate(["A", "B"])])
    assert attempts == [2, 2] and seen == [["A", "B"]]


class MovedPartitionConsumer(FakeConsumer):
    """A consumer whose partition a rebalance gave to another instance while the work ran."""

    def __init__(self, journal: Journal, code: int) -> None:
        super().__init__(journal)
        self.code = code

    def store_offsets(self, message):
        raise KafkaException(KafkaError(self.code))


def test_an_offset_for_a_partition_moved_meanwhile_is_left_to_its_new_owner(database):
    journal = Journal(database.url)
    loop = make_loop(database, announce, journal)
    loop._consumer = MovedPartitionConsumer(journal, KafkaError._STATE)
    with capture_logs() as logs:
        loop._checkpoint(FakeMessage("ns.file-accepted", an_event()))  # the work stands; no error
    assert journal.committed_rows() == 1 and journal.steps == ["send (committed rows: 1)", "flush"]
    assert [entry["event"] for entry in logs] == ["offset_not_stored_partition_moved"]


def test_any_other_failure_to_store_an_offset_is_raised(database):
    journal = Journal(database.url)
    loop = make_loop(database, announce, journal)
    loop._consumer = MovedPartitionConsumer(journal, KafkaError._INVALID_ARG)
    with pytest.raises(KafkaException):
        loop._checkpoint(FakeMessage("ns.file-accepted", an_event()))
