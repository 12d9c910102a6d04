"""Calls ledger benchmark (issue 10). Run: .venv/bin/python bench/bench_ledger.py [--calls N] [--database-url URL]

Prints, on this machine, in one run (each figure the median of ``--repeats`` runs, each run on an
empty database):
- the floor, as the issue sets it: the same rows stored bare, in one transaction, in a copy of
  the ``calls`` table with its indexes (as migrated: id, (file_id, row), outstanding, …) and no
  foreign key: PostgreSQL one ``COPY`` of a CSV buffer made beforehand (as ``\\copy`` of a file), SQLite
  one ``executemany`` of plain tuples made beforehand;
- for reference, the same bare storing with a transaction per 1,000 and per 10,000 rows (what
  committing each batch costs by itself), and into ``calls`` itself (since migration 0008 it has
  no foreign key checked per row: this shows what the table itself costs beyond the copy);
- ``store_calls`` (services/invoicer/ledger.py) storing them from a DataFrame as the invoicer
  does, in batches of 1,000 and of 10,000 calls, one transaction each: usage claims, overlap
  marks, once per (file, row), commit;
- µs per call and the ratio to the floor.
``--overlap-share`` stores an earlier file holding that share of the usage first (untimed), so
that share of the calls overlaps it. SQLite (a temporary file) unless ``--database-url`` names a
PostgreSQL server: the benchmark creates its own databases there and drops them afterwards.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import polars as pl  # noqa: E402
import psycopg  # noqa: E402
from sqlalchemy import text  # noqa: E402

from bench.machine import header  # noqa: E402
from cdrflow.db import Database, migrate  # noqa: E402
from services.invoicer.ledger import CALL_COLUMNS, store_calls  # noqa: E402

FILE_ID = "00000000-0000-0000-0000-00000000f11e"
EARLIER_ID = "00000000-0000-0000-0000-0000000ea41e"
T0 = datetime(2026, 10, 1, tzinfo=UTC)
BATCHES = (1_000, 10_000)
COLUMNS = ", ".join(f'"{c}"' for c in CALL_COLUMNS)


def generate(calls: int) -> pl.DataFrame:
    """``calls`` rated calls of one file in time order, as the rater leaves them: 2,000 customers,
    20,000 CLIs, UK numbers dialled, one call in ten unanswered, one in fifty without a rate."""
    i = pl.int_range(0, calls, eager=True)
    unrated = i % 50 == 7
    billable = (i % 3_600 + 59) // 60 * 60
    return pl.DataFrame({"row": i + 2}).with_columns(
        file_id=pl.lit(FILE_ID), carrier=pl.lit("gamma"), direction=pl.lit("outbound"),
        cli=pl.format("44163296{}", (i % 20_000).cast(pl.String).str.zfill(4)),
        dialled=pl.format("44{}", ((i * 7_919) % 10**9).cast(pl.String).str.zfill(9)),
        start=(pl.lit(T0) + pl.duration(microseconds=i * 370_001)).dt.cast_time_unit("us"),
        duration=pl.lit(i % 3_600 + 1), answered=pl.lit(i % 10 != 0),
        charge_code=pl.when(pl.lit(i % 4 == 0)).then(pl.lit("UKN")), account_code=pl.lit(None, pl.String),
        cdr_cost=pl.lit(i % 9_000 * 10), customer=pl.format("C{}", (i % 2_000).cast(pl.String).str.zfill(4)),
        tariff=pl.lit("standard"), code=pl.when(pl.lit(~unrated)).then(pl.lit("UKN")),
        destination=pl.when(pl.lit(~unrated)).then(pl.lit("UK National")),
        band=pl.when(pl.lit(i % 3 == 0)).then(pl.lit("offpeak")).otherwise(pl.lit("peak")),
        billable_seconds=pl.when(pl.lit(~unrated)).then(pl.lit(billable)),
        charge=pl.when(pl.lit(~unrated)).then(pl.lit(billable * 250)), cost=pl.lit(i % 9_000 * 10),
        status=pl.when(pl.lit(unrated)).then(pl.lit("unrated")).otherwise(pl.lit("rated")),
        reason=pl.when(pl.lit(unrated)).then(pl.lit("no rate for 4420 in tariff standard")),
    ).select(pl.col(c).cast(t) for c, t in CALL_COLUMNS.items())


def add_files(database: Database) -> None:
    with database.transaction() as session:
        for file_id, name in ((FILE_ID, "bench.csv"), (EARLIER_ID, "earlier.csv")):
            session.execute(text(
                "INSERT INTO files (id, fingerprint, carrier, kind, period, direction, original_name, size, channel,"
                " received_at, status, updated_at, overlap_policy) VALUES (:id, :fp, 'gamma', 'cdr', 'monthly',"
                " 'outbound', :name, 1, 'upload', :t, 'parsed', :t, 'skip')"),
                {"id": file_id, "fp": file_id.replace("-", "").ljust(64, "0"), "name": name, "t": T0})


def skip(_file_id: str) -> str:
    return "skip"


def store_earlier(database: Database, calls: pl.DataFrame, share: float) -> int:
    """An earlier file holding ``share`` of the usage (the calls whose row falls in the share)."""
    earlier = calls.filter(pl.col("row") % 100 < round(share * 100)).with_columns(file_id=pl.lit(EARLIER_ID))
    for lo in range(0, len(earlier), 100_000):
        with database.transaction() as session:
            store_calls(session, earlier.slice(lo, 100_000), overlap_policy_of=skip)
    return len(earlier)


def time_store(database: Database, calls: pl.DataFrame, batch: int, overlapping: int) -> float:
    started = time.perf_counter()
    inserted = overlaps = 0
    for lo in range(0, len(calls), batch):
        with database.transaction() as session:
            result = store_calls(session, calls.slice(lo, batch), overlap_policy_of=skip)
        inserted, overlaps = inserted + result.inserted, overlaps + result.overlapping
    seconds = time.perf_counter() - started
    assert (inserted, overlaps) == (len(calls), overlapping), (inserted, overlaps)
    return seconds


class Sqlite:
    name = "SQLite"
    indexes = "?"

    @property
    def floor_what(self) -> str:
        return f"bare executemany into a copy of calls (rowid + {self.indexes} indexes, no foreign key), one transaction"

    def __init__(self, calls: pl.DataFrame, work: Path) -> None:
        self.work = work
        self.template = work / "template.db"
        migrate(f"sqlite:///{self.template}")
        add_files(Database(f"sqlite:///{self.template}"))
        self.rows = calls.with_columns(pl.col("start").dt.strftime("%Y-%m-%d %H:%M:%S%.6f")).rows()
        self.paths: list[Path] = []

    def fresh(self) -> Database:
        path = self.work / f"run-{uuid.uuid4().hex[:8]}.db"
        shutil.copyfile(self.template, path)
        self.paths.append(path)
        return Database(f"sqlite:///{path}")

    def floor(self, *, into_calls: bool = False, batch: int | None = None) -> float:
        """Seconds to store the rows bare: one executemany a transaction (sqlite3 begins it at the
        first insert), of all the rows or of ``batch`` rows each."""
        database = self.fresh()
        table = "calls" if into_calls else "calls_floor"
        with database.engine.connect() as connection:
            raw = connection.connection.driver_connection
            if not into_calls:  # calls' own DDL, renamed, without its foreign keys (as PostgreSQL's LIKE)
                for (sql,) in raw.execute("SELECT sql FROM sqlite_master WHERE tbl_name = 'calls' AND sql IS NOT NULL"):
                    sql = re.sub(r",\s*FOREIGN KEY\([^)]*\) REFERENCES \w+ \(\w+\)", "", sql)
                    raw.execute(sql.replace('"calls"', table).replace(" ON calls ", f" ON {table} ")
                                .replace("_calls_", "_calls_floor_"))
                raw.commit()
                self.indexes = raw.execute("SELECT count(*) FROM sqlite_master WHERE type = 'index' "
                                           "AND tbl_name = 'calls_floor'").fetchone()[0]
            insert = f"INSERT INTO {table} ({COLUMNS}) VALUES ({', '.join('?' * len(CALL_COLUMNS))})"
            step = batch or len(self.rows)
            parts = [self.rows[lo:lo + step] for lo in range(0, len(self.rows), step)]
            started = time.perf_counter()
            for rows in parts:
                raw.executemany(insert, rows)
                raw.commit()
            seconds = time.perf_counter() - started
            assert raw.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == len(self.rows)
        database.dispose()
        return seconds

    def drop(self) -> None:
        for path in self.paths:
            for part in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
                part.unlink(missing_ok=True)
        self.paths.clear()


class Postgres:
    indexes = "?"

    @property
    def floor_what(self) -> str:
        return f"bare COPY into a copy of calls ({self.indexes} indexes, no foreign key), one transaction"

    def __init__(self, calls: pl.DataFrame, server_url: str) -> None:
        self.admin = server_url.replace("postgresql+psycopg://", "postgresql://")
        self.server_url = server_url
        self.calls = calls
        self.databases: list[str] = []
        with psycopg.connect(self.admin) as conn:
            self.name = "PostgreSQL " + conn.execute("SHOW server_version").fetchone()[0].split()[0]

    def fresh(self) -> Database:
        name = f"cdrflow_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        url = self.server_url.rsplit("/", 1)[0] + "/" + name
        migrate(url)
        database = Database(url)
        add_files(database)
        return database

    def floor(self, *, into_calls: bool = False, batch: int | None = None) -> float:
        """Seconds to store the rows bare: one COPY a transaction, of all the rows or of ``batch``
        rows each, from CSV buffers made beforehand."""
        step = batch or len(self.calls)
        buffers = []
        for lo in range(0, len(self.calls), step):
            buffer = io.BytesIO()
            self.calls.slice(lo, step).write_csv(buffer, include_header=False, quote_style="non_numeric")
            buffers.append(buffer.getvalue())
        database = self.fresh()
        table = "calls" if into_calls else "calls_floor"
        with database.engine.connect() as connection:
            raw = connection.connection.driver_connection
            if not into_calls:
                raw.execute("CREATE TABLE calls_floor (LIKE calls INCLUDING ALL)")  # indexes, defaults; no foreign key
                raw.commit()
                self.indexes = raw.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'calls_floor'").fetchone()[0]
            started = time.perf_counter()
            for data in buffers:
                with raw.cursor() as cursor, cursor.copy(f"COPY {table} ({COLUMNS}) FROM STDIN (FORMAT csv)") as copy:
                    copy.write(data)
                raw.commit()
            seconds = time.perf_counter() - started
            assert raw.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == len(self.calls)
        database.dispose()
        return seconds

    def drop(self) -> None:
        with psycopg.connect(self.admin, autocommit=True) as conn:
            for name in self.databases:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.databases.clear()


def run(target: Sqlite | Postgres, calls: pl.DataFrame, args: argparse.Namespace) -> dict:
    figures: dict = {"floor": target.floor(), "calls": target.floor(into_calls=True)}
    for batch in BATCHES:
        figures["floor", batch] = target.floor(batch=batch)
    target.drop()
    for batch in BATCHES:
        database = target.fresh()
        overlapping = store_earlier(database, calls, args.overlap_share) if args.overlap_share else 0
        figures[batch] = time_store(database, calls, batch, overlapping)
        database.dispose()
        target.drop()
    one, five, fifteen = os.getloadavg()
    print(f"  run: floor {figures['floor']:.2f} s | "
          + " | ".join(f"floor ×{b:,} {figures['floor', b]:.2f} s" for b in BATCHES)
          + f" | into calls {figures['calls']:.2f} s | "
          + " | ".join(f"store_calls ×{b:,} {figures[b]:.2f} s" for b in BATCHES)
          + f" | load {one:.2f} {five:.2f} {fifteen:.2f}", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--database-url", help="a PostgreSQL server (postgresql+psycopg://…); default SQLite")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--overlap-share", type=float, default=0.0,
                        help="share of the calls whose usage an earlier file holds already (0..1)")
    args = parser.parse_args()

    calls = generate(args.calls)
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as work:
        target = Postgres(calls, args.database_url) if args.database_url else Sqlite(calls, Path(work))
        print(header(f"calls ledger: {args.calls:,} calls of one file stored by store_calls on {target.name}, "
                     f"{args.overlap_share:.0%} of them overlapping an earlier file"))
        try:
            runs = [run(target, calls, args) for _ in range(args.repeats)]
        finally:
            target.drop()
    per_call = 1e6 / args.calls
    floor = statistics.median(r["floor"] for r in runs)
    into_calls = statistics.median(r["calls"] for r in runs)
    print(f"median of {len(runs)}, {args.calls:,} calls:")
    print(f"  floor, {target.floor_what}: {floor:6.2f} s {floor * per_call:6.2f} µs/call")
    for batch in BATCHES:
        seconds = statistics.median(r["floor", batch] for r in runs)
        print(f"  the same bare, a transaction per {batch:,} rows: {seconds:6.2f} s {seconds * per_call:6.2f} µs/call "
              f"{seconds / floor:4.2f}× floor")
    print(f"  the same bare into calls itself: {into_calls:6.2f} s "
          f"{into_calls * per_call:6.2f} µs/call {into_calls / floor:4.2f}× floor")
    for batch in BATCHES:
        seconds = statistics.median(r[batch] for r in runs)
        print(f"  store_calls, batches of {batch:>6,} (a transaction each): {seconds:6.2f} s "
              f"{seconds * per_call:6.2f} µs/call {seconds / floor:4.2f}× floor")
    one, five, fifteen = os.getloadavg()
    print(f"load average at the end {one:.2f} {five:.2f} {fifteen:.2f} (1, 5, 15 min)")


if __name__ == "__main__":
    main()
