"""Checkpoint benchmark (issue 9: outbox for every event, or publish-after-commit).
Run: .venv/bin/python bench/bench_checkpoint.py [--calls N] [--quick] [--database-url URL]

One parsed file of N calls (default 1,000,000; ``--quick``: 20,000) is cut into
record-parsed events of 10,000 records each (the default ``batch_size``), built once, up front,
as the parser builds them (``Event.to_bytes()`` of a batch as columns, ``cdrflow.batches``),
keyed by file and batch. Then,
on the real broker and the real database, in one run, each phase timed on its own:

1. floor: produce every payload with ``EventProducer`` and flush (no database);
2. publish-after-commit, as ``ServiceLoop._checkpoint`` does it: one transaction writes one
   small row and adds every payload to a ``Spool`` (which spills to a temporary file past
   64 MB), commits; then every payload is sent from the spool and the producer flushed;
3. outbox for every event: one transaction writes the same small row and adds every payload
   with ``add_raw_to_outbox``, commits; then ``OutboxRelay.publish_pending()`` (batches of
   200: read, send, flush, mark published) until it returns 0.

Serialising the events is left out of every phase (the payloads exist before the timer
starts), so the phases differ only in what they do with the bytes. One producer, warmed up
first, serves all three phases (a service keeps one for its lifetime).

The database is SQLite (the embedded default) in a file of its own under bench/.data, deleted
afterwards, or ``--database-url`` (e.g. postgresql+psycopg://...), migrated first; the bench's
outbox entries (publisher ``bench``) and its scratch table are removed afterwards. The broker
is a private LocalKafka started and stopped here, or the one ``CDRFLOW_BENCH_KAFKA_BOOTSTRAP``
names (the integration test's), with a namespace of its own.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import polars as pl  # noqa: E402
from sqlalchemy import Column, Integer, MetaData, String, Table, delete, func, insert, select  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from cdrflow.batches import to_columns  # noqa: E402
from cdrflow.bus import EventProducer, Topic, provision_topics, topic_name  # noqa: E402
from cdrflow.callrecords import RECORD_SCHEMA  # noqa: E402
from cdrflow.bus.outbox import OutboxRelay, add_raw_to_outbox  # noqa: E402
from cdrflow.bus.spool import Spool  # noqa: E402
from cdrflow.db import Database, migrate  # noqa: E402
from cdrflow.db.models import OutboxEntry  # noqa: E402
from cdrflow.events import Event, EventType, event_id  # noqa: E402
from cdrflow.localkafka import LocalKafka, free_port  # noqa: E402
from machine import header  # noqa: E402

DATA = HERE / ".data"
RECORDS_PER_EVENT = 10_000
QUICK_CALLS = 20_000
PUBLISHER = "bench"
RELAY_BATCH = 200
FLUSH_TIMEOUT_S = 600  # a loaded machine may take minutes for a few hundred MB: wait, don't fail
BOOTSTRAP_ENV = "CDRFLOW_BENCH_KAFKA_BOOTSTRAP"
EPOCH = datetime(2026, 10, 1, tzinfo=UTC)
CHARGE_CODES = ("BRS", "MOB", "FRA", "LON", "INT")

# The "one small row" each transaction writes, standing in for the parser's update of the file.
_metadata = MetaData()
marks = Table(
    "bench_checkpoint_marks", _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run", String(36)),
    Column("phase", String(32)),
    Column("at", String(40)),
)


@dataclass(frozen=True)
class Payload:
    topic: str
    key: str
    event_id: str
    body: bytes


@dataclass(frozen=True)
class Result:
    phase: str
    seconds: float
    steps: str = ""


def record(row: int) -> dict:
    """One call record as the parser reads it: varied enough that compression is realistic."""
    h = (row * 2_654_435_761) & 0xFFFFFFFF
    duration = 0 if h % 100 < 8 else 1 + h % 900
    start = EPOCH + timedelta(seconds=row * 2.6781)
    return {
        "row": row,
        "cli": f"+44{1_632_960_000 + h % 50_000}",
        "dialled": f"0{1_174_960_000 + (h >> 7) % 9_000_000}",
        "start": start,
        "end": start + timedelta(seconds=duration),
        "duration": duration,
        "answered": duration > 0,
        "charge_code": CHARGE_CODES[h % 5],
        "cost": duration * (5 + h % 40) * 100 // 6,  # micros
        "account_code": None,
        "direction": None,
    }


def build_payloads(calls: int, namespace: str) -> list[Payload]:
    """The file's record-parsed batches, serialised (each batch's dicts are dropped once serialised)."""
    file_id = str(uuid.uuid4())
    topic = topic_name(namespace, Topic.RECORD_PARSED)
    base = {"file_id": file_id, "carrier": "bench", "direction": "outbound"}
    payloads = []
    for batch, first in enumerate(range(1, calls + 1, RECORDS_PER_EVENT)):
        rows = range(first, min(first + RECORDS_PER_EVENT, calls + 1))
        ident = event_id(EventType.RECORD_PARSED, file_id, batch)
        frame = pl.DataFrame([record(r) for r in rows], schema=RECORD_SCHEMA)
        data = base | {"part": "batch", "batch": batch, "count": frame.height, "records": to_columns(frame)}
        event = Event(type=EventType.RECORD_PARSED, source="cdrflow/parser", subject=file_id, id=ident, data=data)
        payloads.append(Payload(topic, f"{file_id}/{batch}", ident, event.to_bytes()))
    return payloads


# --- the phases ------------------------------------------------------------------------------


def floor(producer: EventProducer, payloads: list[Payload]) -> Result:
    t0 = time.perf_counter()
    for p in payloads:
        producer.send_raw(p.topic, p.key, p.body)
    producer.flush(FLUSH_TIMEOUT_S)
    return Result("floor", time.perf_counter() - t0, "produce + flush")


def publish_after_commit(database: Database, producer: EventProducer, payloads: list[Payload], run: str) -> Result:
    """The steps of ``ServiceLoop._checkpoint`` (without decoding a message or storing its offset)."""
    spool = Spool()
    try:
        t0 = time.perf_counter()
        with database.transaction() as session:
            session.execute(insert(marks).values(run=run, phase="publish-after-commit", at=_now()))
            for p in payloads:
                producer.check_size(p.body, p.topic)
                spool.add(p.topic, p.key, p.body)
        t1 = time.perf_counter()
        for name, key, body in spool:
            producer.send_raw(name, key, body)
        producer.flush(FLUSH_TIMEOUT_S)
        t2 = time.perf_counter()
    finally:
        spool.close()
    if spool.count != len(payloads):
        raise AssertionError(f"spooled {spool.count} events of {len(payloads)}")
    return Result("publish-after-commit", t2 - t0, f"transaction {t1 - t0:.2f} s, publish {t2 - t1:.2f} s")


def outbox(database: Database, producer: EventProducer, payloads: list[Payload], run: str) -> Result:
    relay = OutboxRelay(database, producer, publisher=PUBLISHER, batch=RELAY_BATCH)
    t0 = time.perf_counter()
    with database.transaction() as session:
        session.execute(insert(marks).values(run=run, phase="outbox", at=_now()))
        for p in payloads:
            add_raw_to_outbox(session, p.topic, p.key, p.body, entry_id=p.event_id, publisher=PUBLISHER)
    t1 = time.perf_counter()
    published = 0
    while sent := relay.publish_pending(timeout=FLUSH_TIMEOUT_S):
        published += sent
    t2 = time.perf_counter()
    if published != len(payloads):
        raise AssertionError(f"the relay published {published} entries of {len(payloads)}")
    return Result("outbox", t2 - t0, f"transaction {t1 - t0:.2f} s, relay {t2 - t1:.2f} s")


def _now() -> str:
    return datetime.now(UTC).isoformat()


# --- the parts: database and broker -------------------------------------------------------------


@contextmanager
def bench_database(url: str | None) -> Iterator[tuple[Database, str]]:
    """A migrated database with the scratch table; whatever the bench wrote is gone afterwards."""
    path: Path | None = None
    if url is None:
        DATA.mkdir(parents=True, exist_ok=True)
        path = DATA / f"checkpoint-{os.getpid()}-{uuid.uuid4().hex[:6]}.sqlite"
        url = f"sqlite:///{path}"
    migrate(url)
    database = Database(url)
    _metadata.create_all(database.engine)
    _forget_bench_entries(database)  # a run that crashed may have left some behind
    try:
        yield database, url
    finally:
        try:
            _forget_bench_entries(database)
            _metadata.drop_all(database.engine)
        finally:
            database.dispose()
            if path is not None:
                for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                    leftover.unlink(missing_ok=True)


def _forget_bench_entries(database: Database) -> None:
    with database.transaction() as session:
        session.execute(delete(OutboxEntry).where(OutboxEntry.publisher == PUBLISHER))


def _pending(database: Database) -> int:
    with database.transaction() as session:
        return session.scalar(select(func.count()).select_from(OutboxEntry).where(
            OutboxEntry.publisher == PUBLISHER, OutboxEntry.published_at.is_(None))) or 0


@contextmanager
def bench_broker() -> Iterator[tuple[str, str, str]]:
    """(bootstrap, namespace, description): the broker ``BOOTSTRAP_ENV`` names, or a private one."""
    if external := os.environ.get(BOOTSTRAP_ENV):
        yield external, "bench" + uuid.uuid4().hex[:10], f"{external} (from {BOOTSTRAP_ENV})"
        return
    home = Path(tempfile.mkdtemp(prefix="cdrflow-bench-kafka-"))
    broker = LocalKafka(home, port=free_port())
    try:
        broker.start()
        yield broker.bootstrap, "bench", f"private LocalKafka at {broker.bootstrap}"
    finally:
        broker.stop()
        shutil.rmtree(home, ignore_errors=True)


def warm_up(producer: EventProducer, topic: str) -> None:
    """Connect and learn the topic's leaders before any timer starts."""
    producer.send_raw(topic, "warm-up", b"{}")
    producer.flush(FLUSH_TIMEOUT_S)


# --- report ---------------------------------------------------------------------------------------


def report(results: list[Result], megabytes: float) -> str:
    base = results[0].seconds
    lines = [f"{'phase':<22}{'wall s':>9}{'MB/s':>9}{'x floor':>9}   steps"]
    for r in results:
        lines.append(f"{r.phase:<22}{r.seconds:>9.2f}{megabytes / r.seconds:>9.1f}"
                     f"{r.seconds / base:>8.2f}x   {r.steps}")
    by_phase = {r.phase: r for r in results}
    pac, obx = by_phase["publish-after-commit"], by_phase["outbox"]
    cheap, dear = (pac, obx) if pac.seconds <= obx.seconds else (obx, pac)
    lines.append("")
    lines.append(f"cheaper: {cheap.phase}, by {dear.seconds - cheap.seconds:.2f} s "
                 f"({dear.phase} takes {dear.seconds / cheap.seconds:.2f}x as long)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000, help="calls in the file (default 1,000,000)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_CALLS:,} calls (for the smoke test)")
    parser.add_argument("--database-url", help="default: SQLite in bench/.data")
    args = parser.parse_args(argv)
    calls = QUICK_CALLS if args.quick else args.calls
    if calls < 1:
        parser.error("--calls must be at least 1")

    run = str(uuid.uuid4())
    print(header("bench_checkpoint: publish-after-commit vs an outbox for every event (issue 9)"), flush=True)
    with bench_database(args.database_url) as (database, url), bench_broker() as (bootstrap, namespace, where):
        payloads = build_payloads(calls, namespace)
        megabytes = sum(len(p.body) for p in payloads) / 1e6
        print(f"database: {make_url(url).get_backend_name()} | broker: {where}")
        print(f"file: {calls:,} calls in {len(payloads):,} record-parsed events of up to {RECORDS_PER_EVENT:,} "
              f"records | payload {megabytes:.1f} MB (10^6 bytes)\n", flush=True)
        provision_topics(bootstrap, namespace)
        producer = EventProducer(bootstrap, client_id=f"{namespace}.bench")
        warm_up(producer, payloads[0].topic)
        phases: list[Callable[[], Result]] = [
            lambda: floor(producer, payloads),
            lambda: publish_after_commit(database, producer, payloads, run),
            lambda: outbox(database, producer, payloads, run),
        ]
        results = []
        for phase in phases:
            results.append(phase())
        if left := _pending(database):
            raise AssertionError(f"{left} outbox entries still pending after the relay returned 0")
        print(report(results, megabytes))
        one, five, fifteen = os.getloadavg()
        print(f"load average at the end: {one:.2f} {five:.2f} {fifteen:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
