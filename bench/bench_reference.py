"""Reference-data loads at a reseller's scale (issue 10). Run: .venv/bin/python bench/bench_reference.py
[--database-url postgresql+psycopg://…] [--runs 3]

Prints, on this machine, in one run (each figure the median of ``--runs``, each run on a fresh database):
- 50,000 CLIs of 2,000 customers (DDIs, DDI prefixes, DDI ranges, account and trunk codes) loaded
  by ``cdrflow customers load`` as an operator runs it (a new process, after ``cdrflow migrate``
  and ``cdrflow tariffs load``), the same file loaded again (every CLI already held), and the
  same through the admin API (``POST /customers/load`` on a Starlette TestClient);
- the floor: a bare bulk insert of the same customers and CLI rows (already normalised, no
  checks) into ``customers`` and ``customer_clis`` in one transaction, through the driver's
  fastest path (SQLite ``executemany``; PostgreSQL ``COPY``);
- a 200,000-row rate deck (bench_rate's) loaded by ``cdrflow rates load`` and by
  ``POST /rate-sheets``, beside its floor: validating it in-process (``read_rate_sheet``);
- the start-up of a Python process importing what those commands import (SQLAlchemy, polars,
  the models, the rating library), which every CLI figure includes.
SQLite by default (a temporary data directory); with ``--database-url`` (a PostgreSQL server
URL) each run creates its own database on that server and drops it afterwards.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import polars as pl  # noqa: E402
from sqlalchemy import create_engine, func, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench_rate import make_deck  # noqa: E402
from machine import header  # noqa: E402

DATA = HERE / ".data"
DATA_VERSION = "v1"  # part of every generated file's name: bump it when the generator changes
CUSTOMERS, CLIS, DECK_ROWS = 2_000, 50_000, 200_000
TARIFFS = ("business", "residential", "wholesale", "partner")
CDRFLOW = [sys.executable, "-m", "cdrflow_app"]


# --- data -----------------------------------------------------------------------------------------


def customers_frame() -> pl.DataFrame:
    """50,000 CLIs of 2,000 customers, 25 each, in customer order: DDIs 95.6% (written as
    operators write them: +44…, 0…, with spaces), DDI prefixes ``+44…*`` 2%, DDI ranges of
    100 numbers 0.4%, account codes 1.6% and trunk codes (``kind`` trunk) 0.4%."""
    i = pl.int_range(0, CLIS, eager=True).alias("i")
    slot = pl.col("i") % 250  # the mix, per 250 CLIs (ten customers)
    n = pl.col("i").cast(pl.String).str.pad_start(6, "0")
    ddi = pl.lit("1179") + n  # 44 1179 nnnnnn: 10-digit national numbers, one each
    kind = (pl.when(slot < 5).then(pl.lit("prefix")).when(slot < 6).then(pl.lit("range"))
            .when(slot < 10).then(pl.lit("account")).when(slot < 11).then(pl.lit("trunk")).otherwise(pl.lit("ddi")))
    cli = (pl.when(kind == "prefix").then(pl.lit("+442079") + n.str.slice(1) + "*")  # n < 100,000: a leading 0
           .when(kind == "range").then(pl.lit("+44161") + n + "00-+44161" + n + "99")
           .when(kind == "account").then(pl.lit("ACC-") + n)
           .when(kind == "trunk").then(pl.lit("sip-trunk-") + n)
           .when(pl.col("i") % 3 == 0).then(pl.lit("0") + ddi)
           .when(pl.col("i") % 3 == 1).then(pl.lit("+44 ") + ddi.str.slice(0, 4) + " " + ddi.str.slice(4))
           .otherwise(pl.lit("+44") + ddi))
    customer = pl.lit("C") + (pl.col("i") * CUSTOMERS // CLIS).cast(pl.String).str.pad_start(5, "0")
    tariff = pl.lit(pl.Series(TARIFFS)).gather(pl.col("i") * CUSTOMERS // CLIS % len(TARIFFS))
    return pl.DataFrame(i).select(
        customer=customer, name=pl.lit("Customer ") + customer, tariff=tariff, cli=cli,
        kind=pl.when(kind == "trunk").then(pl.lit("trunk")).otherwise(pl.lit("")),
    )


def make_files() -> tuple[Path, Path, Path]:
    DATA.mkdir(exist_ok=True)
    customers, tariffs = DATA / f"ref-customers-50k-{DATA_VERSION}.csv", DATA / f"ref-tariffs-{DATA_VERSION}.csv"
    deck = DATA / "deck-200k-v2.csv"  # bench_rate's deck, shared
    if not customers.exists():
        customers_frame().write_csv(customers)
    tariffs.write_text("tariff,name\n" + "".join(f"{t},{t.title()}\n" for t in TARIFFS))
    make_deck(deck)
    return customers, tariffs, deck


def floor_rows(customers: Path) -> tuple[list[tuple], list[tuple]]:
    """The file's customers and CLIs as the load stores them, prepared before the floor's clock starts."""
    from cdrflow.reference import csv_rows
    from services.rater.clis import parse_cli

    rows = csv_rows(customers, ("customer", "name", "cli"))
    seen: dict[str, tuple] = {}
    clis = []
    for _, row in rows:
        seen.setdefault(row["customer"], (row["customer"], row["name"], row["tariff"], "monthly"))
        e = parse_cli(row["customer"], row["cli"], row["kind"] or None)
        clis.append((e.customer, e.kind, e.value))
    return list(seen.values()), clis


# --- databases ------------------------------------------------------------------------------------


@contextmanager
def fresh_database(server_url: str | None) -> Iterator[tuple[Path, str]]:
    """(data directory, database URL), both new and migrated; removed afterwards."""
    from cdrflow.db import migrate

    home = Path(tempfile.mkdtemp(prefix="cdrflow-bench-ref-"))
    name = None
    try:
        if server_url is None:
            url = f"sqlite:///{home / 'cdrflow.db'}"
        else:
            name = "bench_ref_" + uuid.uuid4().hex[:10]
            _admin(server_url, f'CREATE DATABASE "{name}"')
            url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
        migrate(url)
        yield home, url
    finally:
        shutil.rmtree(home, ignore_errors=True)
        if name is not None:
            _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


def _admin(server_url: str, statement: str) -> None:
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(statement))
    finally:
        engine.dispose()


def count_clis(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.scalar(select(func.count()).select_from(text("customer_clis"))) or 0
    finally:
        engine.dispose()


# --- timing ---------------------------------------------------------------------------------------


class Timing(NamedTuple):
    """Wall seconds, and CPU seconds (user + system) of the process doing the work: a new
    ``cdrflow`` process's own, or this one's for in-process work (on PostgreSQL the server's CPU
    is not in it). CPU time says what the work costs when a shared machine's wall time is high."""

    wall: float
    cpu: float


@contextmanager
def clock(child: bool = False) -> Iterator[list[Timing]]:
    """Times the ``with`` block; the Timing is in the yielded list afterwards."""
    out: list[Timing] = []
    who = resource.RUSAGE_CHILDREN if child else resource.RUSAGE_SELF
    before, started = resource.getrusage(who), time.perf_counter()
    yield out
    after, wall = resource.getrusage(who), time.perf_counter() - started
    out.append(Timing(wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime))


def timed(fn: Callable[[], object], child: bool = False) -> Timing:
    with clock(child) as t:
        fn()
    return t[0]


# --- phases ---------------------------------------------------------------------------------------


def cdrflow(home: Path, url: str, *args: str) -> tuple[Timing, str]:
    """Run ``cdrflow ARGS`` as an operator would; its Timing and output."""
    env = os.environ | {"CDRFLOW_DATA_DIR": str(home), "CDRFLOW_DATABASE_URL": url}
    with clock(child=True) as t:
        done = subprocess.run([*CDRFLOW, *args], env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"cdrflow {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return t[0], done.stdout.strip()


def through_cli(server_url: str | None, customers: Path, tariffs: Path, deck: Path) -> dict[str, tuple[Timing, str]]:
    with fresh_database(server_url) as (home, url):
        cdrflow(home, url, "migrate")
        cdrflow(home, url, "tariffs", "load", str(tariffs))
        out = {"customers": cdrflow(home, url, "customers", "load", str(customers))}
        out["again"] = cdrflow(home, url, "customers", "load", str(customers))
        out["deck"] = cdrflow(home, url, "rates", "load", str(deck), "--tariff", "business")
        stored = count_clis(url)
    if stored != CLIS:
        raise AssertionError(f"{stored} CLIs stored, expected {CLIS}")
    return out


def through_api(server_url: str | None, customers: Path, deck: Path) -> dict[str, tuple[Timing, str]]:
    from starlette.testclient import TestClient

    from cdrflow.runtime import Runtime
    from cdrflow.settings import Settings
    from services.admin.app import create_app

    body, deck_body = customers.read_bytes(), deck.read_bytes()
    with fresh_database(server_url) as (home, url):
        runtime = Runtime(Settings(data_dir=home, database_url=url), "admin")
        try:
            with TestClient(create_app(runtime)) as client:
                for tariff in TARIFFS:
                    client.put(f"/tariffs/{tariff}", json={"name": tariff.title()}).raise_for_status()

                def post(path: str, content: bytes) -> tuple[Timing, str]:
                    with clock() as t:
                        response = client.post(path, content=content, headers={"content-type": "text/csv"})
                    if response.status_code not in (200, 201):
                        raise RuntimeError(f"POST {path}: {response.status_code} {response.text[:2000]}")
                    return t[0], response.text

                out = {"customers": post(f"/customers/load?name={customers.name}", body),
                       "deck": post(f"/rate-sheets?kind=retail&owner=business&name={deck.name}", deck_body)}
        finally:
            runtime.database.dispose()
        stored = count_clis(url)
    if stored != CLIS:
        raise AssertionError(f"{stored} CLIs stored, expected {CLIS}")
    return out


def floor(server_url: str | None, rows: tuple[list[tuple], list[tuple]]) -> Timing:
    """A bare bulk insert of the same customers and CLIs, one transaction, no checks."""
    from cdrflow.db.session import make_engine

    customers, clis = rows
    with fresh_database(server_url) as (_, url):
        engine = make_engine(url)
        try:
            with engine.begin() as connection:
                connection.execute(text("INSERT INTO tariffs (code, name, schedule, split_bands, places, rounding, "
                                        "charge_unanswered) VALUES " + ", ".join(
                                            f"('{t}', '{t}', 'uk-default', false, 4, 'half-up', false)"
                                            for t in TARIFFS)))
            raw = engine.raw_connection()
            try:
                cursor = raw.cursor()
                with clock() as t:
                    if engine.dialect.name == "postgresql":
                        with cursor.copy("COPY customers (code, name, tariff, billing_schedule) FROM STDIN") as copy:
                            for row in customers:
                                copy.write_row(row)
                        with cursor.copy("COPY customer_clis (customer_code, kind, value) FROM STDIN") as copy:
                            for row in clis:
                                copy.write_row(row)
                    else:
                        cursor.executemany("INSERT INTO customers (code, name, tariff, billing_schedule) "
                                           "VALUES (?, ?, ?, ?)", customers)
                        cursor.executemany("INSERT INTO customer_clis (customer_code, kind, value) VALUES (?, ?, ?)",
                                           clis)
                    raw.commit()
            finally:
                raw.close()
        finally:
            engine.dispose()
    return t[0]


def imports() -> Timing:
    """A new Python process importing what ``cdrflow customers load`` and ``rates load`` import."""
    return timed(lambda: subprocess.run([sys.executable, "-c", "import cdrflow_app.cli, cdrflow.db, "
                                         "services.rater.reference"], check=True), child=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="a PostgreSQL server URL (default: SQLite in a temporary directory)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    print(header("bench_reference: 50,000 CLIs and a 200,000-row deck through the CLI and the API (issue 10)"),
          flush=True)
    backend = make_url(args.database_url).get_backend_name() if args.database_url else "sqlite"
    customers, tariffs, deck = make_files()
    print(f"database: {backend} | {CLIS:,} CLIs of {CUSTOMERS:,} customers "
          f"({customers.stat().st_size / 1e6:.1f} MB) | deck {DECK_ROWS:,} rows ({deck.stat().st_size / 1e6:.1f} MB) "
          f"| median of {args.runs}\n", flush=True)

    from services.rater.ratesheet import read_rate_sheet

    runs = range(args.runs)
    startup = [imports() for _ in runs]
    rows = floor_rows(customers)
    floors = [floor(args.database_url, rows) for _ in runs]
    deck_floors = [timed(lambda: read_rate_sheet(deck)) for _ in runs]
    cli_runs = [through_cli(args.database_url, customers, tariffs, deck) for _ in runs]
    api_runs = [through_api(args.database_url, customers, deck) for _ in runs]
    base = statistics.median(f.wall for f in floors)
    deck_base = statistics.median(f.wall for f in deck_floors)

    def line(what: str, timings: list[Timing], floor_wall: float | None = None) -> str:
        wall, cpu = statistics.median(t.wall for t in timings), statistics.median(t.cpu for t in timings)
        ratio = f"{wall / floor_wall:>7.1f}x" if floor_wall else " " * 8
        return f"{what:<56}{wall:>8.2f}{cpu:>7.2f}{ratio}   ({', '.join(f'{t.wall:.2f}' for t in timings)})"

    print(f"{'':<56}{'wall s':>8}{'cpu s':>7}{'/floor':>8}   (wall of each run)")
    print(line("process start-up: python importing what the commands use", startup))
    print(line(f"floor: bare bulk insert, {CUSTOMERS:,} customers + {CLIS:,} CLIs", floors))
    print(line(f"cdrflow customers load: {CLIS:,} CLIs (new process)", [r["customers"][0] for r in cli_runs], base))
    print(line("cdrflow customers load: the same file again (all held)", [r["again"][0] for r in cli_runs], base))
    print(line(f"POST /customers/load: {CLIS:,} CLIs (TestClient)", [r["customers"][0] for r in api_runs], base))
    print(line(f"floor: read_rate_sheet, {DECK_ROWS:,}-row deck in-process", deck_floors))
    print(line(f"cdrflow rates load: {DECK_ROWS:,}-row deck (new process)", [r["deck"][0] for r in cli_runs],
               deck_base))
    print(line(f"POST /rate-sheets: {DECK_ROWS:,}-row deck (TestClient)", [r["deck"][0] for r in api_runs],
               deck_base))
    print(f"\n  cdrflow customers load said: {cli_runs[-1]['customers'][1]}")
    print(f"  and again: {cli_runs[-1]['again'][1]}")
    print(f"  POST /customers/load said: {api_runs[-1]['customers'][1]}")
    print(f"  cdrflow rates load said: {cli_runs[-1]['deck'][1]}")
    one, five, fifteen = os.getloadavg()
    print(f"load average at the end: {one:.2f} {five:.2f} {fifteen:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
