"""Fault injection (issue 9): whatever fails — a slow commit, a service killed with SIGKILL, the
broker restarted or down, PostgreSQL unreachable — nothing is lost, nothing is billed twice,
and every reply tells the truth.

Every service runs as its own process on the real broker and PostgreSQL. The tests that stop
or restart a broker use one of their own (``fault_broker``), so the session broker other tests
share is never touched; PostgreSQL is slowed or cut through a TCP proxy (``db_proxy``). The
test process itself reads the database directly, so it can watch while the services can't.
Every wait is bounded.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import polars as pl
import pytest
from confluent_kafka import Consumer, TopicPartition
from sqlalchemy import func, inspect, select
from sqlalchemy.engine import make_url

from cdrflow.bus import provision_topics
from cdrflow.bus.topics import Topic, dead_letter_name, topic_name
from cdrflow.client import AdminClient
from cdrflow.db import Database
from cdrflow.db.models import Call, File, Invoice
from cdrflow.filestore import FileStore
from cdrflow.localkafka import LocalKafka, free_port
from cdrflow.money import from_micros
from cdrflow_app.orchestrate import settings_env, spawn_service, stop_processes, wait_for_admin
from cdrflow.settings import Settings
from services.invoicer.tax import call_charges_line, totals
from services.parser.api import parse_file
from services.rater.engine import rate_calls
from services.rater.reference import load_plan
from tests.peers.tcpproxy import TcpProxy
from tests.authhelp import admin_headers

SERVICES = ("dedupe", "parser", "rater", "invoicer", "admin")
"""The pipeline under test; the collector and mail gateway have nothing to do here."""
FINAL = {"rated", "held", "failed", "discarded"}
CONSUMED = (Topic.FILE_ARRIVED, Topic.FILE_ACCEPTED, Topic.RECORD_PARSED, Topic.CALL_RATED, Topic.RUN_CLOSED,
            Topic.ADMIN_COMMANDS)
"""Every topic a service consumes, so every topic that has a dead-letter topic in use."""
CUSTOMERS = ("ACME", "BRISDENT")
PERIOD = "2026-10"


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fault_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A broker of this module's own, on a free port with its own home: the tests stop and
    restart it (its data dir survives, so topics and offsets do too)."""
    broker = LocalKafka(tmp_path_factory.mktemp("fault-kafka"), port=free_port())
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def broker(fault_broker: LocalKafka) -> LocalKafka:
    """``fault_broker``, running (a test that failed while it was stopped leaves it stopped)."""
    fault_broker.start()
    return fault_broker


@pytest.fixture
def broker_settings(settings: Settings, broker: LocalKafka) -> Settings:
    """``settings`` on the module's broker, with this test's topics provisioned on it."""
    s = settings.model_copy(update={"kafka_bootstrap": broker.bootstrap})
    provision_topics(s.bootstrap, s.namespace)
    return s


@pytest.fixture
def log_dir(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """Where the services write their logs; their tails are printed if the test fails."""
    yield str(tmp_path)
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        for log_file in sorted(tmp_path.glob("*.log")):
            print(f"----- {log_file.name} -----\n" + log_file.read_text(errors="replace")[-4000:])


@contextmanager
def services(settings_of: dict[str, Settings], log_dir: str) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """Each service as its own process with its own settings (so one can reach the database
    through a slow proxy and another directly); the admin API answering before we yield."""
    procs = {name: spawn_service(name, s, log_dir) for name, s in settings_of.items()}
    try:
        if "admin" in procs:
            wait_for_admin(settings_of["admin"], procs)
        yield procs
    finally:
        stop_processes(procs)


# --- observing ------------------------------------------------------------------------------


def file_statuses(database: Database, ids: list[str]) -> dict[str, str | None]:
    """Each file's status as the database has it (None: not recorded by dedupe yet)."""
    with database.transaction() as session:
        found = dict(session.execute(select(File.id, File.status).where(File.id.in_(ids))).all())
    return {i: found.get(i) for i in ids}


def stored_calls(database: Database) -> tuple[int, int]:
    """Calls stored, and distinct (file, row) among them."""
    with database.transaction() as session:
        total = session.scalar(select(func.count()).select_from(Call))
        distinct = session.scalar(select(func.count()).select_from(
            select(Call.file_id, Call.row).distinct().subquery()))
    return total or 0, distinct or 0


def wait_for_final(database: Database, ids: list[str], timeout: float, stall: float = 45) -> dict[str, str | None]:
    """Wait until every file is in a final state; give up after ``timeout`` s, or once nothing
    (no status, no stored call) has moved for ``stall`` s. Returns the statuses either way,
    so the caller's assertion says which files are stuck where."""
    deadline = time.monotonic() + timeout
    last, moved = None, time.monotonic()
    while True:
        statuses = file_statuses(database, ids)
        if all(s in FINAL for s in statuses.values()):
            return statuses
        progress = (tuple(sorted(statuses.items(), key=lambda kv: kv[0])), stored_calls(database)[0])
        now = time.monotonic()
        if progress != last:
            last, moved = progress, now
        if now - moved > stall or now > deadline:
            return statuses
        time.sleep(0.5)


def read_to_end(bootstrap: str, topics: list[str], timeout: float = 30) -> list[bytes]:
    """Every message now on ``topics``, from the start to the high watermark of each partition
    (an observer: assigned, not in any group). Repeats are kept, so duplicates show."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"observer-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        metadata = consumer.list_topics(timeout=10)
        ends: dict[tuple[str, int], int] = {}
        start: list[TopicPartition] = []
        for topic in topics:
            for partition in metadata.topics[topic].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
                if high > low:
                    ends[(topic, partition)] = high
                    start.append(TopicPartition(topic, partition, low))
        values: list[bytes] = []
        if not start:
            return values
        consumer.assign(start)
        deadline = time.monotonic() + timeout
        while ends and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            values.append(msg.value())
            where = (msg.topic(), msg.partition())
            if where in ends and msg.offset() + 1 >= ends[where]:
                del ends[where]
        assert not ends, f"could not read {sorted(ends)} to the end within {timeout}s"
        return values
    finally:
        consumer.close()


def dead_letters(settings: Settings, database: Database) -> list[str]:
    """Every dead letter, as "service: error": the dead-letter topics, and the dead_letters
    table where the schema has one."""
    found = []
    letters = read_to_end(settings.bootstrap, [dead_letter_name(settings.namespace, t) for t in CONSUMED])
    for value in letters:
        try:
            data = orjson.loads(value)["data"]
            found.append(f"{data.get('service')}: {data.get('error')}")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            found.append(f"undecodable dead letter: {value[:200]!r}")
    if inspect(database.engine).has_table("dead_letters"):
        from cdrflow.db.models import DeadLetter  # the table came with issue 9

        with database.transaction() as session:
            rows = session.execute(select(DeadLetter.service, DeadLetter.error)).all()
        found.extend(f"{service} (table): {error}" for service, error in rows)
    return found


def issued_invoices(settings: Settings) -> list[dict]:
    return [orjson.loads(v) for v in read_to_end(settings.bootstrap,
                                                 [topic_name(settings.namespace, Topic.INVOICE_ISSUED)])]


# --- clean-run expectations -----------------------------------------------------------------


def rated_by_engine(paths: list[Path], settings: Settings, database: Database) -> pl.DataFrame:
    """What a clean run stores for these files: the same parser, engine and reference data,
    straight from the files (as tests/integration/test_crash.py does)."""
    with database.transaction() as session:
        plan = load_plan(session, FileStore(settings.file_store_dir), settings.zone)
    frames = []
    for path in paths:
        for batch in parse_file(path, "generic-cdr", zone=settings.zone):
            frames.append(rate_calls(batch.records, plan, carrier="gamma", direction="outbound"))
    return pl.concat(frames)


def expected_invoices(rated: pl.DataFrame) -> dict[str, tuple[int, Decimal]]:
    """Per customer: (calls billed, invoice total) — every rated call of October, on one invoice:
    the calls' exact sum rounded once to the penny, plus 20% VAT rounded once."""
    billed = rated.filter(pl.col("status") == "rated").group_by("customer").agg(
        calls=pl.len(), total=pl.col("charge").sum())
    return {r["customer"]: (r["calls"], Decimal(totals([call_charges_line(r["calls"], r["total"])]).total_minor)
                            .scaleb(-2)) for r in billed.iter_rows(named=True)}


def expected_recon(rated: pl.DataFrame, carrier: str = "gamma") -> list[tuple]:
    """Reconciliation groups as services/rater/recon.py forms them: unmatched calls by CLI,
    unrated calls by tariff and the first five dialled digits; (status, key, carrier, calls,
    seconds, cost)."""
    keys = {"unmatched": pl.col("cli"),
            "unrated": pl.col("tariff") + pl.lit(": ") + pl.col("dialled").str.slice(0, 5) + pl.lit("…")}
    groups = []
    for status, key in keys.items():
        grouped = rated.filter(pl.col("status") == status).with_columns(key=key).group_by("key").agg(
            calls=pl.len(), seconds=pl.col("duration").sum(), cost=pl.col("cost").sum())
        groups += [(status, r["key"], carrier, r["calls"], r["seconds"], from_micros(r["cost"] or 0))
                   for r in grouped.iter_rows(named=True)]
    return sorted(groups)


def recon_groups(client: AdminClient) -> list[tuple]:
    return sorted((g["status"], g["key"], g["carrier"], g["calls"], g["seconds"], Decimal(g["cost"]))
                  for g in client.recon())


# --- files ----------------------------------------------------------------------------------

CLIS = ("+441632960001", "+441632960001", "+441632960002", "+441179460010", "+441179460010",
        "+441632960099")
"""ACME's two CLIs, BRISDENT's, and one no customer has (its calls go to reconciliation)."""


def write_calls(path: Path, index: int, rows: int) -> Path:
    """A gamma CDR file: ``rows`` calls of the sample customers over two days starting on
    2 + 6·index October (so no two files' calls overlap); every 97th call is to Japan, which
    the business tariff has no rate for (reconciliation: unrated)."""
    start = datetime(2026, 10, 2 + 6 * index, 7, 0, 0)
    with path.open("w") as fh:
        fh.write("cli,dialled,start,duration\n")
        for n in range(rows):
            if n % 97 == 0:
                dialled = "+81312345678"
            elif n % 3 == 0:
                dialled = f"07700900{n % 1000:03d}"
            else:
                dialled = f"01174960{n % 1000:03d}"
            fh.write(f"{CLIS[n % len(CLIS)]},{dialled},{(start + timedelta(seconds=n * 7)).isoformat()},"
                     f"{1 + (n * 37 + index * 11) % 900}\n")
    return path


def post_file(settings: Settings, path: Path) -> httpx.Response:
    """``POST /files`` as the console sends it; a long timeout, so a slow reply is seen as one."""
    with path.open("rb") as fh:
        return httpx.post(f"{settings.admin_url}/files", timeout=120, headers=admin_headers(settings),
                          data={"carrier": "gamma", "kind": "cdr", "period": "daily", "direction": "outbound"},
                          files={"file": (path.name, fh, "text/csv")})


def cdrflow_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cdrflow_app", *args], env=os.environ | settings_env(settings),
                          capture_output=True, text=True, timeout=180)


# --- a: the race ------------------------------------------------------------------------------

UPLOADS = 50


def small_file(path: Path, n: int) -> Path:
    """Three calls, one of them varied by ``n``: every upload has its own content (none is held)."""
    path.write_text("cli,dialled,start,duration\n"
                    f"+441632960001,01174960123,2026-10-05T10:{n:02d}:00,{60 + n}\n"
                    f"+441632960002,07700900123,2026-10-05T11:{n:02d}:00,{90 + n}\n"
                    f"+441179460010,01632960999,2026-10-06T09:{n:02d}:00,{45 + n}\n")
    return path


def test_fifty_quick_uploads_are_all_parsed(settings, proxied_settings, db_proxy, database, log_dir, tmp_path):
    """Under load the stages that announce what they wrote are slow to commit: dedupe reaches
    PostgreSQL through a proxy adding 50 ms to every chunk it sends, the parser through one
    adding 10 ms; the rater, invoicer and admin go direct. If a stage's events go out before
    its transaction commits, the next stage reads about state it can't see yet: the parser
    finds no such file (dead letter, the file stays ``accepted``), or the invoicer marks a file
    ``rated`` and the parser's late ``parsed`` lands on top of it. Published after the commit,
    all 50 are parsed and rated."""
    db_proxy.latency = 0.05
    paths = [small_file(tmp_path / f"gamma-cdr-quick-{n:02d}.csv", n) for n in range(UPLOADS)]
    with TcpProxy(db_proxy.target[0], db_proxy.target[1], latency=0.01) as parser_proxy:
        url = make_url(settings.effective_database_url).set(host="127.0.0.1", port=parser_proxy.port)
        settings_of = dict.fromkeys(SERVICES, settings)
        settings_of["dedupe"] = proxied_settings
        settings_of["parser"] = settings.model_copy(update={"database_url": url.render_as_string(hide_password=False)})
        with services(settings_of, log_dir):
            started = time.monotonic()

            def upload(path: Path) -> str:
                return AdminClient.for_settings(settings).upload(path, carrier="gamma", kind="cdr", period="daily",
                                                              direction="outbound")["file_id"]

            with ThreadPoolExecutor(max_workers=8) as pool:
                ids = list(pool.map(upload, paths))
            uploaded_in = time.monotonic() - started
            statuses = wait_for_final(database, ids, timeout=180, stall=30)
            letters = dead_letters(settings, database)

    counts = Counter(statuses.values())
    assert counts == {"rated": UPLOADS}, (
        f"after {UPLOADS} uploads in {uploaded_in:.1f}s: files by status {dict(counts)}; "
        f"{len(letters)} dead letter(s), e.g. {letters[:3]}")
    assert stored_calls(database) == (3 * UPLOADS, 3 * UPLOADS)
    assert letters == []


# --- b: everything fails once ------------------------------------------------------------------

BIG_ROWS = 20_000
BIG_FILES = 4


class Chaos:
    """The faults of one run, each noted with where the pipeline was when it struck."""

    def __init__(self, procs: dict[str, subprocess.Popen[bytes]], settings: Settings, log_dir: str,
                 broker: LocalKafka, proxy: TcpProxy, database: Database) -> None:
        self.procs, self.settings, self.log_dir = procs, settings, log_dir
        self.broker, self.proxy, self.database = broker, proxy, database
        self.started = time.monotonic()
        self.notes: list[str] = []
        self.exited_alone: list[str] = []

    def note(self, what: str) -> None:
        calls = stored_calls(self.database)[0]
        self.notes.append(f"{time.monotonic() - self.started:6.1f}s {what} (calls stored: {calls})")

    def kill(self, name: str) -> None:
        """SIGKILL the service (no chance to finish anything) and start a new one."""
        proc = self.procs[name]
        if proc.poll() is not None:
            self.exited_alone.append(f"{name} (exit status {proc.returncode})")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        self.note(f"killed {name}")
        self.procs[name] = spawn_service(name, self.settings, self.log_dir)
        if name == "admin":
            wait_for_admin(self.settings, {"admin": self.procs[name]})

    def restart_broker(self) -> None:
        self.note("stopping the broker")
        self.broker.stop()
        self.broker.start()
        self.note("broker back")

    def cut_database(self, seconds: float) -> None:
        self.note(f"database cut ({self.proxy.cut()} connection(s) closed)")
        time.sleep(seconds)
        self.proxy.restore()
        self.note("database back")

    def progress(self) -> tuple[int, tuple[tuple[str, int], ...]]:
        """Calls stored and files by status: what moves while the pipeline works."""
        with self.database.transaction() as session:
            by_status = session.execute(select(File.status, func.count()).group_by(File.status)).all()
        return stored_calls(self.database)[0], tuple(sorted((s, n) for s, n in by_status))

    def mid_work(self, rng: random.Random, timeout: float = 20) -> None:
        """Wait until the pipeline is seen working (bounded: a stage may still be rejoining its
        group after the last fault), then a random moment more: the next fault lands mid-work."""
        before = self.progress()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = self.progress()
            if now != before or now[0] == BIG_FILES * BIG_ROWS:
                break
            time.sleep(0.2)
        else:
            self.note(f"no progress seen for {timeout:.0f}s")
        time.sleep(rng.uniform(0.0, 1.5))

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                self.exited_alone.append(f"{name} (exit status {proc.returncode})")

    def __str__(self) -> str:
        return "\n".join(self.notes)


def test_every_service_killed_broker_restarted_database_cut_ends_as_a_clean_run(
        settings, broker_settings, proxied_settings, db_proxy, broker, database, log_dir, tmp_path):
    """Four gamma files of 20,000 calls (each cut into parts) and a byte-identical copy of the first. While they go
    through, each service is killed with SIGKILL and restarted at seeded random moments, the
    broker is restarted once and PostgreSQL is unreachable for 10 s; the billing runs are
    closed with the invoicer and admin killed in the middle. The end must equal a clean run:
    the same calls once each, the same invoices, reconciliation and invoice-issued events."""
    rng = random.Random(9)
    # parts of 256 KB: each file is cut into parts, parsed by whichever parser is alive at the time
    run = proxied_settings.model_copy(update={"kafka_bootstrap": broker.bootstrap, "batch_size": 1000,
                                              "parse_part_bytes": 256 * 1024})
    paths = [write_calls(tmp_path / f"gamma-cdr-202610{2 + 6 * i:02d}.csv", i, BIG_ROWS) for i in range(BIG_FILES)]
    copy = tmp_path / "gamma-cdr-20261002-resent.csv"
    copy.write_bytes(paths[0].read_bytes())
    rated = rated_by_engine(paths, settings, database)
    invoices_expected = expected_invoices(rated)
    recon_expected = expected_recon(rated)
    assert set(invoices_expected) == set(CUSTOMERS) and recon_expected, "the files must bill both and leave recon"

    with services(dict.fromkeys(SERVICES, run), log_dir) as procs:
        chaos = Chaos(procs, run, log_dir, broker, db_proxy, database)

        def upload(path: Path) -> str:
            file_id = AdminClient.for_settings(run).upload(path, carrier="gamma", kind="cdr", period="daily",
                                                        direction="outbound")["file_id"]
            chaos.note(f"uploaded {path.name}")
            return file_id

        ids = [upload(paths[0]), upload(paths[1])]
        chaos.kill("admin")
        ids += [upload(paths[2]), upload(paths[3])]
        copy_id = upload(copy)
        time.sleep(rng.uniform(0.0, 0.3))
        chaos.kill("dedupe")  # while it records the last files
        for fault in ("parser", "broker", "rater", "database", "invoicer", "parser", "rater"):
            chaos.mid_work(rng)
            if fault == "broker":
                chaos.restart_broker()
            elif fault == "database":
                chaos.cut_database(10)
            else:
                chaos.kill(fault)

        statuses = wait_for_final(database, [*ids, copy_id], timeout=150)
        chaos.note("files final" if all(s in FINAL for s in statuses.values()) else f"gave up: {statuses}")
        assert all(s in FINAL for s in statuses.values()), f"files not in a final state: {statuses}\n{chaos}"

        client = AdminClient.for_settings(run)
        client.close_run("ACME", PERIOD)
        time.sleep(rng.uniform(0.0, 0.5))
        chaos.kill("invoicer")
        client.close_run("BRISDENT", PERIOD)
        time.sleep(rng.uniform(0.0, 0.3))
        chaos.kill("admin")

        def invoices() -> dict[str, Invoice]:
            with database.transaction() as session:
                return {i.customer: i for i in session.scalars(select(Invoice).where(Invoice.number.is_not(None)))}

        deadline = time.monotonic() + 120  # the invoicer was just killed: it rejoins its group first
        while len(invoices()) < len(CUSTOMERS) and time.monotonic() < deadline:
            time.sleep(0.5)
        issued = invoices()
        chaos.note(f"invoices issued: {sorted(issued)}")
        assert set(issued) == set(CUSTOMERS), f"invoices issued: {sorted(issued)}\n{chaos}"
        deadline = time.monotonic() + 60
        while len({e["data"]["invoice_number"] for e in issued_invoices(run)}) < len(CUSTOMERS) \
                and time.monotonic() < deadline:
            time.sleep(1)
        events = issued_invoices(run)
        chaos.note(f"{len(events)} invoice-issued event(s) read")
        recon = recon_groups(AdminClient.for_settings(run))
        chaos.check_alive()
        letters = dead_letters(run, database)
        chaos.note("done")

    story = f"{chaos}\ndead letters: {letters[:5]}"
    print(story)  # what struck when: shown with the failure, or with -rP
    # every file final: the first file or its copy held (whichever dedupe saw second), the rest rated
    assert sorted([statuses[ids[0]], statuses[copy_id]]) == ["held", "rated"], f"{statuses}\n{story}"
    assert [statuses[i] for i in ids[1:]] == ["rated"] * (BIG_FILES - 1), f"{statuses}\n{story}"
    # calls: each once
    assert stored_calls(database) == (BIG_FILES * BIG_ROWS, BIG_FILES * BIG_ROWS), story
    # invoices: the clean run's, one per customer
    with database.transaction() as session:
        for customer, (calls, total) in invoices_expected.items():
            [invoice] = session.scalars(select(Invoice).where(Invoice.customer == customer)).all()
            assert (invoice.charges[0].quantity, invoice.total) == (calls, total), f"{customer}\n{story}"
    # reconciliation: the clean run's groups
    assert recon == recon_expected, story
    # invoice-issued: one event id per invoice (repeats allowed, with the same id), totals as invoiced
    by_number: dict[str, set[str]] = {}
    for event in events:
        by_number.setdefault(event["data"]["invoice_number"], set()).add(event["id"])
        assert Decimal(event["data"]["total"]) == issued[event["data"]["customer"]].total, story
    assert set(by_number) == {i.number for i in issued.values()}, f"{by_number}\n{story}"
    assert all(len(event_ids) == 1 for event_ids in by_number.values()), f"{by_number}\n{story}"
    assert chaos.exited_alone == [], f"services that exited by themselves: {chaos.exited_alone}\n{story}"


# --- c: the broker down when an operator acts -----------------------------------------------


def test_upload_while_broker_is_down_is_announced_when_it_is_back(broker_settings, broker, database, log_dir,
                                                                   tmp_path):
    """With the broker stopped, an upload is durably accepted — ``202`` with ``announced: false``,
    over HTTP and from ``cdrflow upload`` alike, never an error for something that will still
    happen — and once the broker is back each file is announced once and rated."""
    s = broker_settings
    by_http = write_calls(tmp_path / "gamma-cdr-20261002.csv", 0, 300)
    by_cli = write_calls(tmp_path / "gamma-cdr-20261008.csv", 1, 200)
    with services(dict.fromkeys(SERVICES, s), log_dir):
        broker.stop()
        try:
            reply = post_file(s, by_http)
            cli = cdrflow_cli(s, "upload", str(by_cli), "--carrier", "gamma", "--kind", "cdr",
                              "--period", "daily", "--direction", "outbound")
        finally:
            broker.start()
        assert reply.status_code == 202, f"HTTP {reply.status_code}: {reply.text}"
        assert reply.json()["announced"] is False, reply.text
        assert cli.returncode == 0, cli.stderr
        http_id = reply.json()["file_id"]

        def file_of(path: Path) -> str | None:
            fingerprint = hashlib.sha256(path.read_bytes()).hexdigest()
            with database.transaction() as session:
                return session.scalar(select(File.id).where(File.fingerprint == fingerprint))

        deadline = time.monotonic() + 60
        while file_of(by_cli) is None and time.monotonic() < deadline:
            time.sleep(0.5)
        cli_id = file_of(by_cli)
        assert cli_id is not None, "the file uploaded with cdrflow upload never arrived"
        statuses = wait_for_final(database, [http_id, cli_id], timeout=120)
        arrived = [orjson.loads(v) for v in read_to_end(s.bootstrap, [topic_name(s.namespace, Topic.FILE_ARRIVED)])]

    assert statuses == {http_id: "rated", cli_id: "rated"}
    with database.transaction() as session:
        per_file = dict(session.execute(select(Call.file_id, func.count()).group_by(Call.file_id)).all())
    assert per_file == {http_id: 300, cli_id: 200}
    announced = {}
    for event in arrived:
        announced.setdefault(event["data"]["file_id"], set()).add(event["id"])
    assert set(announced) == {http_id, cli_id}, announced
    assert all(len(event_ids) == 1 for event_ids in announced.values()), announced


def test_billing_run_while_broker_is_down_is_done_once(broker_settings, broker, database, log_dir, tmp_path):
    """With the broker stopped, closing a billing run is durably accepted (``202``, ``announced:
    false``), and so is the operator's retry from ``cdrflow bill``; once the broker is back the
    invoice is issued once, with the clean run's total, and a retry after that changes nothing."""
    # November has nothing to bill: its (empty) invoice marks the runs before it handled
    s = broker_settings.model_copy(update={"invoice_empty_runs": True})
    path = write_calls(tmp_path / "gamma-cdr-20261002.csv", 0, 600)
    expected_calls, expected_total = expected_invoices(rated_by_engine([path], s, database))["ACME"]
    with services(dict.fromkeys(SERVICES, s), log_dir):
        client = AdminClient.for_settings(s)
        file_id = client.upload(path, carrier="gamma", kind="cdr", period="daily", direction="outbound")["file_id"]
        assert wait_for_final(database, [file_id], timeout=90) == {file_id: "rated"}

        broker.stop()
        try:
            reply = httpx.post(f"{s.admin_url}/billing-runs", headers=admin_headers(s), json={"customer": "ACME", "period": PERIOD},
                               timeout=120)
            retry = cdrflow_cli(s, "bill", "--customer", "ACME", "--period", PERIOD)
        finally:
            broker.start()
        assert reply.status_code == 202, f"HTTP {reply.status_code}: {reply.text}"
        assert reply.json()["announced"] is False, reply.text
        assert retry.returncode == 0, retry.stderr

        def invoices(period_start: str) -> list[tuple[int, Decimal]]:
            """ACME's invoices for the month starting then, as (calls, total)."""
            with database.transaction() as session:
                return [(sum(c.quantity for c in i.charges), i.total) for i in session.scalars(select(Invoice).where(
                    Invoice.customer == "ACME", Invoice.period_start == datetime.fromisoformat(period_start).date(),
                    Invoice.number.is_not(None)))]

        deadline = time.monotonic() + 120
        while not invoices("2026-10-01") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert invoices("2026-10-01"), "no invoice once the broker was back"
        client.close_run("ACME", PERIOD)  # once more, with the broker up
        # A run for November is keyed like October's (by customer): once it is invoiced, every
        # October run sent before it has been handled too.
        client.close_run("ACME", "2026-11")
        deadline = time.monotonic() + 60
        while not invoices("2026-11-01") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert invoices("2026-11-01"), "the November run was never handled"
        october = invoices("2026-10-01")
        events = [e for e in issued_invoices(s) if e["data"]["period"] == PERIOD]

    assert october == [(expected_calls, expected_total)]
    assert events, "no invoice-issued event for October"
    assert len({e["id"] for e in events}) == 1, events
    assert {Decimal(e["data"]["total"]) for e in events} == {expected_total}
