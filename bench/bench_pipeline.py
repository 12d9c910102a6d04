"""End-to-end pipeline benchmark (issue 10: a million calls through the real pipeline in seconds).
Run: .venv/bin/python bench/bench_pipeline.py [--calls 100000,1000000,3000000] [--instances 1,2]
                                              [--database-url URL] [--quick] [--timeout S]

For each file size N and each instance count (one, or two of parser, rater and invoicer), on
the project's own broker, with every service as its own process (dedupe, parser, rater,
invoicer, admin; not the collector and mail gateway, which take no part in an upload):

1. a fresh database (SQLite in a temporary data dir, or ``CREATE DATABASE bench_<random>`` on
   the ``--database-url`` PostgreSQL server, dropped afterwards), migrated; a fresh topic
   namespace, provisioned;
2. reference data like a reseller's, loaded in-process (not timed; printed apart): a
   200,000-prefix retail rate deck through ``load_rate_sheet``, 2,000 customers and 50,000
   CLIs by a bulk insert into ``customers`` / ``customer_clis`` and one reference-version bump
   (the generators are bench_rate's: ``make_deck``, ``customer_clis``, ``make_cdrs``);
3. the services started and waited for: admin API answering, consumer groups stable with every
   member assigned, each rater's rating plan loaded (so neither start-up nor a rebalance lands
   in the timed figure);
4. timed: from just before the upload (``POST /files``, as an operator uploads) until the
   file is ``rated`` in the database and the calls table holds every call of the file
   (rows − rejected), polled every 0.1 s;
5. per process: CPU seconds during the timed run (utime + stime, /proc/<pid>/stat) and peak RSS
   (VmHWM, /proc/<pid>/status), read just before the services are stopped; each instance's
   share of the work from its log (``calls_stored`` inserted, ``file_parsed`` records) and
   from its CPU seconds;
6. the floor, in the same database, on the same rows (read back from the calls table, untimed):
   PostgreSQL: a bare ``COPY … FROM STDIN`` (text, as psql's ``\\copy``) into a table created
   ``LIKE calls INCLUDING ALL`` (its 4 indexes); SQLite: one transaction of ``executemany`` of
   the rows into a copy of the calls table with its indexes (foreign keys not enforced, as
   ``LIKE`` does not copy them). The ratio is wall / floor;
7. a digest of the result (per customer and status: calls, charge, cost, billable seconds,
   overlaps): one and two instances must give the same.

Goals (issue 10): 1,000,000 calls ≤ 20 s and ≤ 3× the COPY floor on PostgreSQL, ≤ 2× the
floor on SQLite; calls/s about flat from 100,000 to 3,000,000 calls; with two instances each
does a share, the result is identical and the wall time drops.

The broker is a private LocalKafka started once here, or the one ``CDRFLOW_BENCH_KAFKA_BOOTSTRAP``
names (the integration test's). Generated files are cached in bench/.data (git-ignored; names
carry bench_rate's DATA_VERSION). Everything started here is stopped here; a run that does
not finish within ``--timeout`` says at which stage it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import orjson  # noqa: E402
import polars as pl  # noqa: E402
import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

# Consumer-group state is what tells "every instance has its partitions" (step 3); the bus
# wraps no group description, so the bench asks the broker's admin API itself.
from confluent_kafka.admin import AdminClient as KafkaAdmin  # noqa: E402
from confluent_kafka import ConsumerGroupState  # noqa: E402

import bench_rate as gen  # noqa: E402
from cdrflow.bus import provision_topics  # noqa: E402
from cdrflow.client import AdminClient  # noqa: E402
from cdrflow.db import Database  # noqa: E402
from cdrflow.db.session import make_engine  # noqa: E402
from cdrflow.errors import CdrflowError  # noqa: E402
from cdrflow.filestore import FileStore  # noqa: E402
from cdrflow.localkafka import LocalKafka, free_port  # noqa: E402
from cdrflow.money import from_micros  # noqa: E402
from cdrflow_app.orchestrate import spawn_service, stop_processes, wait_for_admin  # noqa: E402
from cdrflow.db.models import Carrier  # noqa: E402
from cdrflow.db.models import Tariff as TariffRow  # noqa: E402
from cdrflow.reference import record_change  # noqa: E402
from cdrflow.settings import Settings  # noqa: E402
from benchdb import driver_dsn, fresh_database  # noqa: E402
from machine import header  # noqa: E402
from services.rater.clis import cli_table  # noqa: E402
from services.rater.reference import load_rate_sheet  # noqa: E402

DATA = gen.DATA
DEFAULT_CALLS = (100_000, 1_000_000, 3_000_000)
QUICK_CALLS = 20_000
CUSTOMERS = 2_000  # bench_rate's 50,000 CLIs, 25 to a customer
CARRIER, TARIFF = "benchco", "bench"
SERVICES = ("dedupe", "parser", "rater", "invoicer", "admin")
SCALED = ("parser", "rater", "invoicer")
"""The stages run as one or two instances; dedupe and admin stay one."""
GROUPS = ("dedupe", "parser", "rater", "invoicer")
"""Services with a consumer group (``<namespace>.<service>``)."""
BOOTSTRAP_ENV = "CDRFLOW_BENCH_KAFKA_BOOTSTRAP"
RUN_TIMEOUT_S = 600.0
READY_TIMEOUT_S = 120.0
POLL_S = 0.1
FLOOR_TABLE = "bench_floor_calls"
FLOOR_CHUNK = 100_000  # rows read back per step for the SQLite floor (reading is not timed)
WORK_FIELDS = {"parser": ("file_part_parsed", "records"), "rater": (None, None), "invoicer": ("calls_stored", "inserted")}
"""Where each scaled service's log says how much it did: (event, count field). A parser logs each
part of a file it parsed (a file larger than ``parse_part_bytes`` is cut into parts); the rater
logs no per-batch event: its share is read from CPU seconds alone."""
TARGETS = {"sqlite": (None, 2.0), "postgresql": (20.0, 3.0)}  # 1,000,000 calls: (wall s, × floor)
STAGE_OF = {None: "upload/dedupe (no file row yet)", "accepted": "parsing", "parsed": "rating and storing",
            "rated": "storing (rated, calls still short)"}
CLK_TCK = os.sysconf("SC_CLK_TCK")


class RunFailed(Exception):
    """A run did not finish: timed out, a file failed, or a service exited. The message says where."""


# --- reference data and files (generated once, cached in bench/.data) ----------------------------


@dataclass(frozen=True)
class Reference:
    deck: Path
    customers: list[tuple[str, str, str, str]]  # code, name, tariff, billing_schedule
    clis: list[tuple[str, str, str]]  # customer_code, kind, value (normalised, as add_cli stores them)


def prepare_reference() -> Reference:
    DATA.mkdir(parents=True, exist_ok=True)
    deck = DATA / f"deck-200k-{gen.DATA_VERSION}.csv"
    gen.make_deck(deck)
    generated = gen.customer_clis()
    per_customer = gen.CLIS // CUSTOMERS
    code = pl.lit("C") + (pl.int_range(0, pl.len()) // per_customer).cast(pl.String).str.pad_start(5, "0")
    owners = generated.select(code.alias("customer"))["customer"]
    table = cli_table(owners, generated["cli"])  # kinds and values read as parse_cli reads them
    codes = owners.unique(maintain_order=True).to_list()
    customers = [(c, f"Customer {c}", TARIFF, "monthly") for c in codes]
    clis = list(table.select("customer", "kind", "value").iter_rows())
    return Reference(deck, customers, clis)


def cdr_file(calls: int) -> tuple[Path, float]:
    """bench_rate's calls file of ``calls`` calls (its generator, its cache); seconds spent generating."""
    path = DATA / f"cdrs-{calls}-{gen.DATA_VERSION}.csv"
    started = time.perf_counter()
    gen.make_cdrs(path, calls)
    return path, time.perf_counter() - started


def load_reference(url: str, store: FileStore, ref: Reference) -> tuple[float, float]:
    """Carrier, tariff, rate deck, customers and CLIs in one transaction; (deck s, customers s)."""
    database = Database(url)
    try:
        with database.transaction() as session:
            # The carrier and tariff as rows (the model's defaults: uk-default schedule, 4 places,
            # half-up), not through their loaders, which are being reworked under issue 10.
            session.add(Carrier(code=CARRIER, name="Bench Carrier", file_format="generic-cdr"))
            session.add(TariffRow(code=TARIFF, name="Bench tariff"))
            session.flush()
            t0 = time.perf_counter()
            load_rate_sheet(session, store, ref.deck.read_bytes(), source_name=ref.deck.name, kind="retail",
                            owner=TARIFF, direction="outbound")
            session.flush()
            t1 = time.perf_counter()
            bulk_insert(session, "customers", ("code", "name", "tariff", "billing_schedule"), ref.customers)
            bulk_insert(session, "customer_clis", ("customer_code", "kind", "value"), ref.clis)
            # One change-log entry for the whole load: the rater reloads its plan once.
            record_change(session, "carrier", CARRIER, "added", "Bench Carrier (generic-cdr)")
            record_change(session, "tariff", TARIFF, "added", "Bench tariff")
            record_change(session, "cli", "bench", "loaded",
                          f"{len(ref.clis)} CLIs of {len(ref.customers)} customers (bench bulk insert)")
        t2 = time.perf_counter()
    finally:
        database.dispose()
    return t1 - t0, t2 - t1


def bulk_insert(session, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:  # type: ignore[no-untyped-def]
    """COPY on PostgreSQL, one driver ``executemany`` on SQLite: no per-row ORM objects."""
    connection = session.connection()
    names = ", ".join(columns)
    if connection.dialect.name == "postgresql":
        raw = connection.connection.driver_connection
        with raw.cursor() as cursor, cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    else:
        marks = ", ".join("?" * len(columns))
        connection.exec_driver_sql(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)


# --- the parts: broker, database, services ---------------------------------------------------------


@dataclass(frozen=True)
class Broker:
    bootstrap: str
    description: str
    pid: int | None  # a private broker's JVM, whose CPU is reported too


@contextmanager
def bench_broker(root: Path) -> Iterator[Broker]:
    if external := os.environ.get(BOOTSTRAP_ENV):
        yield Broker(external, f"{external} (from {BOOTSTRAP_ENV})", None)
        return
    broker = LocalKafka(root / "kafka", port=free_port())
    try:
        broker.start()
        yield Broker(broker.bootstrap, f"private LocalKafka at {broker.bootstrap}", broker.status().pid)
    finally:
        broker.stop()


@contextmanager
def run_database(server_url: str | None, data_dir: Path) -> Iterator[str]:
    """A fresh, migrated database for one run; gone afterwards (SQLite: with the data dir)."""
    with fresh_database(server_url, data_dir, "bench") as url:
        yield url


@dataclass
class Proc:
    name: str  # "parser" or, with two instances, "parser#1", "parser#2"
    service: str
    popen: object
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid  # type: ignore[attr-defined]


def start_services(settings: Settings, log_root: Path, instances: int) -> list[Proc]:
    """Each instance its own log dir (``spawn_service`` writes ``<log_dir>/<service>.log``)."""
    procs = []
    for service in SERVICES:
        count = instances if service in SCALED else 1
        for k in range(1, count + 1):
            log_dir = log_root / f"i{k}"
            log_dir.mkdir(parents=True, exist_ok=True)
            name = f"{service}#{k}" if count > 1 else service
            procs.append(Proc(name, service, spawn_service(service, settings, str(log_dir)), log_dir / f"{service}.log"))
    return procs


def wait_until_ready(settings: Settings, procs: list[Proc], instances: int) -> None:
    """Admin API up, every consumer group stable with all its members assigned, every rater's
    plan loaded (its idle task loads it at start), so the timer starts on a settled pipeline."""
    by_name = {p.name: p.popen for p in procs}
    wait_for_admin(settings, by_name, timeout=READY_TIMEOUT_S)  # type: ignore[arg-type]
    expected = {f"{settings.namespace}.{s}": (instances if s in SCALED else 1) for s in GROUPS}
    admin = KafkaAdmin({"bootstrap.servers": settings.bootstrap})
    deadline = time.monotonic() + READY_TIMEOUT_S
    settled = 0
    while settled < 2:  # the same settled answer twice, 0.5 s apart: no rebalance under way
        _check_alive(procs, "start-up")
        if time.monotonic() > deadline:
            raise RunFailed(f"consumer groups not stable within {READY_TIMEOUT_S:.0f} s: {_group_states(admin, expected)}")
        states = _group_states(admin, expected)
        settled = settled + 1 if all(ok for ok, _ in states.values()) else 0
        time.sleep(0.5)
    raters = [p for p in procs if p.service == "rater"]
    while not all(_logged(p.log, "rating_plan_loaded") for p in raters):
        _check_alive(procs, "start-up")
        if time.monotonic() > deadline:
            print(f"  warning: a rater logged no rating_plan_loaded within {READY_TIMEOUT_S:.0f} s; timing anyway")
            return
        time.sleep(0.2)


def _group_states(admin: KafkaAdmin, expected: dict[str, int]) -> dict[str, tuple[bool, str]]:
    out = {}
    for group, future in admin.describe_consumer_groups(list(expected)).items():
        try:
            desc = future.result(timeout=10)
        except Exception as exc:  # noqa: BLE001  (not there yet: the service is still joining)
            out[group] = (False, f"unknown ({exc})")
            continue
        members = desc.members or []
        assigned = all(m.assignment and m.assignment.topic_partitions for m in members)
        ok = desc.state == ConsumerGroupState.STABLE and len(members) == expected[group] and assigned
        out[group] = (ok, f"{desc.state.name.lower()}, {len(members)}/{expected[group]} members")
    return out


def _logged(path: Path, event: str) -> bool:
    try:
        return event in path.read_text(errors="replace")
    except FileNotFoundError:
        return False


def _check_alive(procs: list[Proc], stage: str) -> None:
    dead = [f"{p.name} (exit {p.popen.poll()})" for p in procs if p.popen.poll() is not None]  # type: ignore[attr-defined]
    if dead:
        raise RunFailed(f"service(s) exited during {stage}: {', '.join(dead)}")


# --- measuring ---------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def backend_cpu(database: str) -> dict[int, float]:
    """CPU seconds of each live PostgreSQL backend serving ``database`` (by process title,
    ``postgres: <user> <database> …``): where the server's share of the work shows on PostgreSQL."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes()
            if title.startswith(b"postgres: ") and f" {database} ".encode() in title:
                found[int(entry.name)] = cpu_seconds(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass(frozen=True)
class Usage:
    cpu_s: float
    rss_mib: float
    work: dict[str, int]  # log event -> summed count field (or occurrences)


@dataclass
class Outcome:
    calls: int
    instances: int
    wall_s: float = float("nan")
    floor_s: float = float("nan")
    floor_indexes: int = 0
    usage: dict[str, Usage] = field(default_factory=dict)
    broker_cpu_s: float | None = None
    database_cpu_s: float | None = None  # PostgreSQL backends (SQLite works inside the services)
    digest: str = ""
    totals: str = ""
    error: str | None = None

    @property
    def ratio(self) -> float:
        return self.wall_s / self.floor_s


def log_work(path: Path) -> dict[str, int]:
    """Work events of one service log: for each event that carries a count (inserted, records,
    calls), the sum of that count; start-up and idle events are left out."""
    sums: dict[str, int] = Counter()
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return {}
    for line in lines:
        if not line.startswith(b"{"):
            continue
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        event = entry.get("event")
        if event in ("rating_plan_loaded", "service_started", "service_stopped", "kafka_client_log"):
            continue
        for key in ("inserted", "records", "calls"):
            if isinstance(entry.get(key), int):
                sums[f"{event}.{key}"] += entry[key]
                break
    return dict(sums)


def wait_for_file(db_url: str, file_id: str, procs: list[Proc], started: float, timeout: float) -> dict[str, float]:
    """Poll until the file is rated and every call of it is stored (rows − rejected); the times
    (seconds since ``started``) at which each status was first seen, and ``stored``. Raises
    RunFailed naming the stage it stopped at."""
    engine = make_engine(db_url)
    seen: dict[str, float] = {}
    status: str | None = None
    try:
        while True:
            with engine.connect() as conn:
                row = conn.execute(text("SELECT status, rows, rejected, status_reason FROM files WHERE id = :id"),
                                   {"id": file_id}).first()
                previous, status = status, (row[0] if row else None)
                if status is not None and status not in seen:
                    seen[status] = time.perf_counter() - started
                if status in ("failed", "held", "discarded"):
                    raise RunFailed(f"file {status} at stage {STAGE_OF.get(previous, previous)}: {row[3]}")
                if status == "rated":
                    stored = _stored(conn, file_id)
                    if stored >= (row[1] or 0) - (row[2] or 0):
                        seen["stored"] = time.perf_counter() - started
                        return seen
            if time.perf_counter() - started > timeout:
                with engine.connect() as conn:
                    stored = _stored(conn, file_id)
                raise RunFailed(f"timed out after {timeout:.0f} s at stage {STAGE_OF.get(status, status)} "
                                f"(file status {status or 'none'}, calls stored {stored:,})")
            _check_alive(procs, f"stage {STAGE_OF.get(status, status)}")
            time.sleep(POLL_S)
    finally:
        engine.dispose()


def _stored(conn, file_id: str) -> int:  # type: ignore[no-untyped-def]
    return conn.execute(text("SELECT count(*) FROM calls WHERE file_id = :id"), {"id": file_id}).scalar() or 0


def result_digest(db_url: str) -> tuple[str, str]:
    """(digest, human summary) of the calls: per customer and status, calls, charge, cost,
    billable seconds and overlaps. Money is in millionths of a pound."""
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = [tuple(int(v) if not isinstance(v, str) else v for v in r) for r in conn.execute(text(
                "SELECT coalesce(customer, ''), status, count(*), coalesce(sum(charge), 0), coalesce(sum(cost), 0), "
                "coalesce(sum(billable_seconds), 0), sum(CASE WHEN overlaps_file_id IS NULL THEN 0 ELSE 1 END) "
                "FROM calls GROUP BY coalesce(customer, ''), status ORDER BY 1, 2"))]
    finally:
        engine.dispose()
    digest = hashlib.sha256(repr(rows).encode()).hexdigest()[:12]
    by_status: dict[str, int] = Counter()
    charge = overlaps = 0
    for _, status, n, micros, _, _, over in rows:
        by_status[status] += n
        charge += micros
        overlaps += over
    parts = ", ".join(f"{n:,} {s}" for s, n in sorted(by_status.items()))
    return digest, (f"{sum(by_status.values()):,} calls ({parts}), {len({r[0] for r in rows if r[0]}):,} customers, "
                    f"charge total £{from_micros(charge)}, {overlaps:,} overlapping")


# --- the floor --------------------------------------------------------------------------------------


def floor(db_url: str, file_id: str) -> tuple[float, int, int]:
    """(seconds, rows, indexes) of storing the file's calls rows the cheapest way, same database."""
    if db_url.startswith("sqlite"):
        return sqlite_floor(make_url(db_url).database or "", file_id)
    return postgres_floor(db_url, file_id)


def sqlite_floor(path: str, file_id: str) -> tuple[float, int, int]:
    """One transaction of ``executemany`` (one prepared statement) into a copy of the calls
    table and its indexes, with the services' journal settings (WAL, synchronous=NORMAL).
    The rows are read back in chunks by a second connection; only the writing is timed."""
    src, dst = sqlite3.connect(path), sqlite3.connect(path, isolation_level=None)
    try:
        dst.execute("PRAGMA journal_mode=WAL")
        dst.execute("PRAGMA synchronous=NORMAL")
        dst.execute("PRAGMA busy_timeout=30000")
        columns = [r[1] for r in src.execute("PRAGMA table_info(calls)") if r[1] != "id"]
        table_sql = src.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'calls'").fetchone()[0]
        dst.execute(re.sub(r'^CREATE TABLE\s+"?calls"?', f"CREATE TABLE {FLOOR_TABLE}", table_sql))
        for (index_sql,) in src.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'calls' "
                                        "AND sql IS NOT NULL"):
            dst.execute(re.sub(r'INDEX\s+"?(\w+)"?\s+ON\s+"?calls"?', rf"INDEX floor_\1 ON {FLOOR_TABLE}", index_sql))
        indexes = dst.execute("SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = ?",
                              (FLOOR_TABLE,)).fetchone()[0]
        names = ", ".join(f'"{c}"' for c in columns)
        insert = f"INSERT INTO {FLOOR_TABLE} ({names}) VALUES ({', '.join('?' * len(columns))})"
        reader = src.execute(f"SELECT {names} FROM calls WHERE file_id = ? ORDER BY id", (file_id,))
        elapsed, rows = 0.0, 0
        dst.execute("BEGIN")
        while chunk := reader.fetchmany(FLOOR_CHUNK):
            t0 = time.perf_counter()
            dst.executemany(insert, chunk)
            elapsed += time.perf_counter() - t0
            rows += len(chunk)
        reader.close()
        t0 = time.perf_counter()
        dst.execute("COMMIT")
        elapsed += time.perf_counter() - t0
        dst.execute(f"DROP TABLE {FLOOR_TABLE}")
        return elapsed, rows, indexes
    finally:
        src.close()
        dst.close()


def postgres_floor(db_url: str, file_id: str) -> tuple[float, int, int]:
    """A bare text ``COPY … FROM STDIN`` of the rows (exported first with ``COPY … TO STDOUT``,
    untimed) into ``LIKE calls INCLUDING ALL``, committed."""
    with psycopg.connect(driver_dsn(db_url)) as conn, tempfile.TemporaryFile() as spool:
        columns = [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = 'calls' AND column_name <> 'id' ORDER BY ordinal_position")]
        names = sql.SQL(", ").join(map(sql.Identifier, columns))
        target = sql.Identifier(FLOOR_TABLE)
        conn.execute(sql.SQL("CREATE TABLE {} (LIKE calls INCLUDING ALL)").format(target))
        indexes = conn.execute("SELECT count(*) FROM pg_indexes WHERE tablename = %s", (FLOOR_TABLE,)).fetchone()[0]
        conn.commit()
        with conn.cursor() as cursor, cursor.copy(sql.SQL("COPY (SELECT {} FROM calls WHERE file_id = {} ORDER BY id) "
                                                          "TO STDOUT").format(names, sql.Literal(file_id))) as copy:
            for block in copy:
                spool.write(block)
        conn.commit()
        spool.seek(0)
        t0 = time.perf_counter()
        with conn.cursor() as cursor, cursor.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(target, names)) as copy:
            while block := spool.read(1 << 20):
                copy.write(block)
        conn.commit()
        elapsed = time.perf_counter() - t0
        rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(target)).fetchone()[0]
        conn.execute(sql.SQL("DROP TABLE {}").format(target))
        conn.commit()
        return elapsed, rows, indexes


# --- one run ------------------------------------------------------------------------------------------


def run_once(calls: int, instances: int, path: Path, ref: Reference, broker: Broker, server_url: str | None,
             root: Path, timeout: float) -> Outcome:
    out = Outcome(calls, instances)
    run_dir = Path(tempfile.mkdtemp(prefix=f"run-{calls}-{instances}-", dir=root))
    data_dir = run_dir / "data"
    data_dir.mkdir()
    print(f"\nrun: {calls:,} calls, {instances} instance(s) of {', '.join(SCALED)}", flush=True)
    try:
        with run_database(server_url, data_dir) as db_url:
            measure(out, path, ref, broker, db_url, run_dir, timeout, postgres=server_url is not None)
    except (RunFailed, CdrflowError) as exc:
        out.error = f"{type(exc).__name__}: {exc}" if isinstance(exc, CdrflowError) else str(exc)
        print(f"  {out.error}")
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return out


def measure(out: Outcome, path: Path, ref: Reference, broker: Broker, db_url: str, run_dir: Path, timeout: float,
            postgres: bool) -> None:
    """Steps 2–7 of the module docstring for one run; the services are stopped before it returns."""
    data_dir = run_dir / "data"
    namespace = f"bench{uuid.uuid4().hex[:10]}"
    settings = Settings(data_dir=data_dir, database_url=db_url, kafka_bootstrap=broker.bootstrap,
                        namespace=namespace, admin_port=free_port(), mailgate_port=free_port())
    provision_topics(broker.bootstrap, namespace)
    deck_s, customers_s = load_reference(db_url, FileStore(settings.file_store_dir), ref)
    print(f"  reference data (not timed): rate deck of 200,000 prefixes {deck_s:.2f} s, "
          f"{len(ref.customers):,} customers + {len(ref.clis):,} CLIs {customers_s:.2f} s")
    procs: list[Proc] = []
    try:
        t_start = time.perf_counter()
        procs = start_services(settings, run_dir / "logs", out.instances)
        wait_until_ready(settings, procs, out.instances)
        print(f"  services ready in {time.perf_counter() - t_start:.1f} s (admin API, consumer groups stable, "
              "rating plan loaded)", flush=True)

        before = {p.name: cpu_seconds(p.pid) for p in procs}
        broker_before = cpu_seconds(broker.pid) if broker.pid else None
        db_name = make_url(db_url).database or ""
        backends_before = backend_cpu(db_name) if postgres else {}
        client = AdminClient.for_settings(settings, timeout=timeout)
        started = time.perf_counter()
        reply = client.upload(path, carrier=CARRIER, kind="cdr", period="daily", direction="outbound")
        uploaded = time.perf_counter() - started
        seen = wait_for_file(db_url, reply["file_id"], procs, started, timeout)
        out.wall_s = seen["stored"]
        after = {p.name: (cpu_seconds(p.pid), peak_rss_mib(p.pid)) for p in procs}
        if broker_before is not None:
            out.broker_cpu_s = cpu_seconds(broker.pid) - broker_before  # type: ignore[arg-type]
        if postgres:  # a backend that started during the run counts from zero
            backends = backend_cpu(db_name)
            out.database_cpu_s = sum(cpu - backends_before.get(pid, 0.0) for pid, cpu in backends.items())
        stop_processes({p.name: p.popen for p in procs})  # type: ignore[misc]
    except (RunFailed, CdrflowError):
        print_log_tails(procs)
        raise
    finally:
        stop_processes({p.name: p.popen for p in procs})  # type: ignore[misc]
    out.usage = {p.name: Usage(after[p.name][0] - before[p.name], after[p.name][1], log_work(p.log)) for p in procs}
    marks = ", ".join(f"{s} +{t:.2f} s" for s, t in seen.items())
    print(f"  wall {out.wall_s:.2f} s upload → rated and stored = {out.calls / out.wall_s:,.0f} calls/s "
          f"(upload answered +{uploaded:.2f} s; first seen: {marks})")
    out.digest, out.totals = result_digest(db_url)
    out.floor_s, floor_rows, out.floor_indexes = floor(db_url, reply["file_id"])
    what = "bare COPY" if postgres else "one-transaction executemany"
    print(f"  floor: {what} of the same {floor_rows:,} calls rows into a copy of calls "
          f"({out.floor_indexes} indexes): {out.floor_s:.2f} s; wall/floor {out.ratio:.2f}x")
    print(f"  result: {out.totals}; digest {out.digest}")
    print_usage(out)


def print_usage(out: Outcome) -> None:
    print(f"  {'process':<12}{'CPU s':>9}{'share':>8}{'peak RSS':>11}   work (from its log)")
    by_service = defaultdict(list)
    for name, u in out.usage.items():
        by_service[name.split("#")[0]].append((name, u))
    for service, members in by_service.items():
        total_cpu = sum(u.cpu_s for _, u in members) or 1.0
        event, key = WORK_FIELDS.get(service, (None, None))
        total_work = sum(u.work.get(f"{event}.{key}", 0) for _, u in members) if event else 0
        for name, u in members:
            share = f"{u.cpu_s / total_cpu:>7.0%}" if len(members) > 1 else "      -"
            work = ", ".join(f"{k} {v:,}" for k, v in sorted(u.work.items())) or "-"
            if event and len(members) > 1 and total_work:
                work += f" ({u.work.get(f'{event}.{key}', 0) / total_work:.0%} of {event}.{key})"
            print(f"  {name:<12}{u.cpu_s:>9.2f}{share:>8}{u.rss_mib:>7.0f} MiB   {work}")
    if out.broker_cpu_s is not None:
        print(f"  {'broker':<12}{out.broker_cpu_s:>9.2f}{'':>8}{'':>11}   (the JVM, CPU only)")
    if out.database_cpu_s is not None:
        print(f"  {'postgres':<12}{out.database_cpu_s:>9.2f}{'':>8}{'':>11}   "
              "(the bench database's backends, CPU only)")


def print_log_tails(procs: list[Proc], lines: int = 8) -> None:
    for p in procs:
        try:
            tail = p.log.read_text(errors="replace").splitlines()[-lines:]
        except FileNotFoundError:
            continue
        print(f"  --- {p.name} log, last {len(tail)} lines ---")
        for line in tail:
            print(f"    {line[:400]}")


# --- report -------------------------------------------------------------------------------------------


def summary(outcomes: list[Outcome], backend: str) -> str:
    cols = [f"{s} CPU s/MiB" for s in SERVICES]
    lines = ["", "summary (CPU seconds during the timed run, summed over instances / peak RSS MiB, the largest):",
             f"{'calls':>10} {'inst':>4} {'wall s':>8} {'calls/s':>9} {'floor s':>8} {'ratio':>7}  "
             + "  ".join(f"{c:>18}" for c in cols) + f"  {'broker CPU s':>12}  {'postgres CPU s':>14}"]
    for o in outcomes:
        if o.error:
            lines.append(f"{o.calls:>10,} {o.instances:>4} failed: {o.error}")
            continue
        cells = []
        for service in SERVICES:
            us = [u for n, u in o.usage.items() if n.split("#")[0] == service]
            cells.append(f"{sum(u.cpu_s for u in us):>10.2f}/{max(u.rss_mib for u in us):<6.0f}" if us else "-")
        broker = f"{o.broker_cpu_s:>12.2f}" if o.broker_cpu_s is not None else f"{'-':>12}"
        broker += f"  {o.database_cpu_s:>14.2f}" if o.database_cpu_s is not None else f"  {'-':>14}"
        lines.append(f"{o.calls:>10,} {o.instances:>4} {o.wall_s:>8.2f} {o.calls / o.wall_s:>9,.0f} "
                     f"{o.floor_s:>8.2f} {o.ratio:>6.2f}x  " + "  ".join(f"{c:>18}" for c in cells) + f"  {broker}")
    done = [o for o in outcomes if not o.error]
    lines += ["", *linearity(done), *scale_out(done), *targets(done, backend)]
    return "\n".join(lines)


def linearity(done: list[Outcome]) -> list[str]:
    lines = []
    for n in sorted({o.instances for o in done}):
        runs = sorted((o for o in done if o.instances == n), key=lambda o: o.calls)
        if runs:
            base = runs[0].calls / runs[0].wall_s
            rates = "; ".join(f"{o.calls:,}: {o.calls / o.wall_s:,.0f} ({o.calls / o.wall_s / base:.2f}x)" for o in runs)
            lines.append(f"calls/s by size, {n} instance(s): {rates}")
    return lines


def scale_out(done: list[Outcome]) -> list[str]:
    lines = []
    for calls in sorted({o.calls for o in done}):
        one = next((o for o in done if o.calls == calls and o.instances == 1), None)
        two = next((o for o in done if o.calls == calls and o.instances == 2), None)
        if one and two:
            lines.append(f"{calls:,} calls, 1 → 2 instances: wall {one.wall_s:.2f} → {two.wall_s:.2f} s "
                         f"({(two.wall_s - one.wall_s) / one.wall_s:+.0%}); "
                         f"identical: {'yes' if one.digest == two.digest else 'no'} ({one.digest} / {two.digest})")
        else:
            lines.append(f"{calls:,} calls: identical: n/a (one instance count only)")
    return lines


def targets(done: list[Outcome], backend: str) -> list[str]:
    wall_target, ratio_target = TARGETS[backend]
    lines = []
    for o in done:
        if o.calls != 1_000_000:
            continue
        ok = o.ratio <= ratio_target and (wall_target is None or o.wall_s <= wall_target)
        wall = f"wall ≤ {wall_target:.0f} s and " if wall_target else ""
        lines.append(f"target (1,000,000 calls, {o.instances} instance(s), {backend}: {wall}≤ {ratio_target:.0f}x floor): "
                     f"{'met' if ok else 'not met'} ({o.wall_s:.2f} s, {o.ratio:.2f}x)")
    return lines


def _numbers(text_: str) -> list[int]:
    return [int(x) for x in text_.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=_numbers, default=list(DEFAULT_CALLS), help="file sizes, comma-separated")
    parser.add_argument("--instances", type=_numbers, default=[1, 2], help="instance counts of parser, rater, invoicer")
    parser.add_argument("--database-url", help="a PostgreSQL server URL (a database is created per run); default SQLite")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_CALLS:,} calls, one instance (smoke test)")
    parser.add_argument("--timeout", type=float, default=RUN_TIMEOUT_S, help="seconds allowed per run (default 600)")
    args = parser.parse_args(argv)
    calls, instances = ([QUICK_CALLS], [1]) if args.quick else (args.calls, args.instances)
    if not calls or min(calls) < 1 or not instances or not set(instances) <= {1, 2}:
        parser.error("--calls must be positive; --instances is 1, 2 or 1,2")
    if args.database_url and not args.database_url.startswith("postgresql"):
        parser.error("--database-url must be a PostgreSQL URL (SQLite is the default, a fresh file per run)")
    backend = "postgresql" if args.database_url else "sqlite"

    print(header("bench_pipeline: upload → every call rated and stored, every service its own process (issue 10)"),
          flush=True)
    t0 = time.perf_counter()
    ref = prepare_reference()
    print(f"reference data generated or read from bench/.data in {time.perf_counter() - t0:.1f} s: "
          f"{len(ref.customers):,} customers, {len(ref.clis):,} CLIs, deck {ref.deck.name}")
    root = Path(tempfile.mkdtemp(prefix="cdrflow-bench-pipeline-"))
    outcomes = []
    try:
        with bench_broker(root) as broker:
            print(f"database: {backend} (a fresh database per run) | broker: {broker.description}", flush=True)
            for n in calls:
                path, made_s = cdr_file(n)
                print(f"\nfile: {path.name}, {n:,} calls, {path.stat().st_size / 1e6:.1f} MB"
                      + (f" (generated in {made_s:.1f} s)" if made_s > 0.5 else ""), flush=True)
                for k in instances:
                    outcomes.append(run_once(n, k, path, ref, broker, args.database_url, root, args.timeout))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(summary(outcomes, backend))
    one, five, fifteen = os.getloadavg()
    print(f"load average at the end: {one:.2f} {five:.2f} {fifteen:.2f}")
    return 1 if any(o.error for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
