"""Billing run benchmark (issue 11: 10,000 customers × 100 calls invoiced within 30 s).
Run: .venv/bin/python bench/bench_billing.py [--customers 10000] [--calls-each 100] [--pdfs 200]
                                             [--database-url URL] [--quick]

In-process, on one fresh database (SQLite in a temporary data dir, or ``CREATE DATABASE
bench_billing_<random>`` on the ``--database-url`` PostgreSQL server, dropped afterwards), migrated:

1. set-up, not timed (printed apart): the customers (monthly schedule; one in ten zero-rated, one
   in four with a recurring £12.50 monthly charge from 1 October) by one bulk insert, and their
   calls (``--calls-each`` each, all in October 2026, sub-penny charges) inserted in bulk straight
   into ``calls`` as the invoicer's ledger stores them (the columns of ``ledger.CALL_COLUMNS``,
   money in integer micros: PostgreSQL one ``COPY``, SQLite one ``executemany``), spread over ten
   files marked ``rated`` (a run bills only calls of rated files); then ``ANALYZE``;
2. the floor, in the same database, on the same calls: one ``INSERT … SELECT customer, count(*),
   sum(charge) FROM calls … GROUP BY customer`` into a scratch table plus one ``UPDATE`` marking
   every call with its row there: the arithmetic and the writes of the run as two set-based
   statements, committed. Then undone, not timed (the marks cleared; PostgreSQL ``VACUUM ANALYZE
   calls``, so the run does not wade through dead rows), so the run starts from the same state;
3. timed, *close*: October closed for every customer by one tick of the scheduler
   (``Scheduler.tick``, ``TICK_CUSTOMERS`` customers to a transaction): a billing run row and a
   run-closed event in the outbox each;
4. timed, *issue*: the run-closed events, decoded from the outbox's bytes as the invoicer would
   receive them, handed ``BATCH_SIZE`` at a time to ``Invoicer.on_runs_closed``, a transaction
   per batch, as the service loop runs its batch handler (without the broker): each invoice, its
   lines, net, VAT and total, its calls CSV in
   the file store, its gap-free number, its invoice-issued event in the outbox. The service's
   INFO logs go to a file in the temporary dir, as they cost what they cost in the service;
5. checked, not timed: one invoice per customer, every call on one, one invoice-issued event
   per invoice, and every invoice's net, VAT and total equal to a recomputation here from the
   generated calls and charges (not from the database);
6. timed, *PDFs*: ``--pdfs`` invoices rendered by ``services.invoicer.render.invoice_pdf``, each
   in its own read transaction, as the mailer and ``cdrflow invoices pdf`` render them.

Goal (issue 11): the run (3 and 4: invoices, lines, totals and events) within 30 s for 10,000
customers with 100 calls each, printed beside the floor; PDFs rendered after the run, per second.
Everything made here is removed here; nothing is left running.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import polars as pl  # noqa: E402
import structlog  # noqa: E402
from sqlalchemy import func, insert, select, text  # noqa: E402

from bench.benchdb import fresh_database  # noqa: E402
from bench.machine import header  # noqa: E402
from cdrflow.bus import Topic, topic_name  # noqa: E402
from cdrflow.bus.consumer import BATCH_SIZE  # noqa: E402
from cdrflow.db import Database  # noqa: E402
from cdrflow.db.models import Call, Carrier, Charge, Customer, CustomerCharge, File, Invoice, OutboxEntry  # noqa: E402
from cdrflow.events import Event  # noqa: E402
from cdrflow.log import configure_logging  # noqa: E402
from cdrflow.runtime import Runtime  # noqa: E402
from cdrflow.settings import Settings  # noqa: E402
from services.invoicer.ledger import CALL_COLUMNS  # noqa: E402
from services.invoicer.periods import Period  # noqa: E402
from services.invoicer.render import invoice_pdf  # noqa: E402
from services.invoicer.service import Invoicer  # noqa: E402
from services.scheduler.runs import SCHEDULER  # noqa: E402
from services.scheduler.service import TICK_CUSTOMERS, Scheduler  # noqa: E402

GOAL_S = 30.0  # the run, 10,000 customers × 100 calls
OCTOBER = Period(date(2026, 10, 1), date(2026, 11, 1))
CLOSED_AT = datetime(2026, 11, 2, 9, tzinfo=UTC)
"""When the runs are closed: after October has ended in the operator's zone (the scheduler closes
no period that has not ended), whatever this machine's clock says."""
FIRST_CALL = datetime(2026, 10, 2, tzinfo=UTC)
CALL_SPREAD_US = 27 * 86_400 * 1_000_000  # every call between 2 and 29 October (UTC)
FILES = 10
CARRIER = "benchco"
ZERO_RATED_EVERY = 10  # customer n is zero-rated when n % 10 == 0
RECURRING_EVERY = 4  # customer n has a recurring charge when n % 4 == 1
RECURRING_PENNIES = 1_250  # £12.50 a month
RECURRING_LINES = 2
"""A monthly charge starting 1 October, billed in advance, is billed for October and November at
the run that closes October (services/invoicer/recurring.py, rule 3): two lines."""
QUICK = {"customers": 200, "calls_each": 20, "pdfs": 5}


# --- generated input -----------------------------------------------------------------------


def customer_code(n: int) -> str:
    return f"C{n:05d}"


def generate_calls(customers: int, each: int) -> pl.DataFrame:
    """``customers × each`` rated calls in time order, as the ledger stores them (``CALL_COLUMNS``,
    money in integer micros): call i is customer i % customers's; charges in sub-penny micros,
    so that rounding the Call Charges line once matters."""
    total = customers * each
    i = pl.int_range(0, total, eager=True)
    per_file = -(-total // FILES)
    billable = ((i * 37) % 3_600 + 59) // 60 * 60
    return pl.DataFrame({"i": i}).with_columns(
        file_id=pl.format("00000000-0000-0000-0000-{}", (i // per_file).cast(pl.String).str.zfill(12)),
        row=i % per_file + 2, carrier=pl.lit(CARRIER), direction=pl.lit("outbound"),
        cli=pl.format("4411300{}", (i % customers).cast(pl.String).str.zfill(5)),
        dialled=pl.format("44207{}", ((i * 7_919) % 10**7).cast(pl.String).str.zfill(7)),
        start=(pl.lit(FIRST_CALL) + pl.duration(microseconds=i * (CALL_SPREAD_US // total))).dt.cast_time_unit("us"),
        duration=(i * 37) % 3_600 + 1, answered=pl.lit(True), charge_code=pl.lit(None, pl.String),
        account_code=pl.lit(None, pl.String), cdr_cost=billable * 100,
        customer=pl.format("C{}", (i % customers).cast(pl.String).str.zfill(5)),
        tariff=pl.lit("bench"), code=pl.lit("UKN"), destination=pl.lit("UK National"),
        band=pl.when(i % 3 == 0).then(pl.lit("offpeak")).otherwise(pl.lit("peak")),
        billable_seconds=billable, charge=billable * (1_000 + i % 777), cost=billable * 100,
        status=pl.lit("rated"), reason=pl.lit(None, pl.String),
    ).select(pl.col(c).cast(t) for c, t in CALL_COLUMNS.items())


@dataclass(frozen=True)
class Expected:
    """Each customer's invoice figures in pennies, worked out here from the generated input."""

    figures: dict[str, tuple[int, int, int]]  # customer: (net, VAT, total)
    lines: int


def expected_invoices(calls: pl.DataFrame, customers: int) -> Expected:
    """Call Charges: the exact sum of the calls' micros rounded once, half up, to the penny;
    recurring lines as ``RECURRING_LINES``; VAT 20 % of the net, rounded once, half up (0 when
    zero-rated). Every amount here is positive, so half up is ``(x + half) // unit``."""
    micros = dict(calls.group_by("customer").agg(pl.col("charge").sum()).iter_rows())
    figures, lines = {}, 0
    for n in range(customers):
        code = customer_code(n)
        net = (micros[code] + 5_000) // 10_000
        lines += 1
        if n % RECURRING_EVERY == 1:
            net += RECURRING_LINES * RECURRING_PENNIES
            lines += RECURRING_LINES
        vat = 0 if n % ZERO_RATED_EVERY == 0 else (net * 2 + 5) // 10
        figures[code] = (net, vat, net + vat)
    return Expected(figures, lines)


# --- the database ----------------------------------------------------------------------------


def backend_name(database: Database) -> str:
    with database.engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            return "PostgreSQL " + connection.exec_driver_sql("SHOW server_version").scalar_one().split()[0]
        return "SQLite " + connection.exec_driver_sql("SELECT sqlite_version()").scalar_one()


def set_up(database: Database, calls: pl.DataFrame, customers: int) -> tuple[float, float]:
    """Carrier, files, customers and charges (one transaction), then the calls (one more);
    seconds for each. Statistics gathered afterwards, as a live database has them."""
    now = datetime.now(UTC)
    t0 = time.perf_counter()
    with database.transaction() as session:
        session.add(Carrier(code=CARRIER, name="Bench Carrier", file_format="generic-cdr"))
        for n, file_id in enumerate(calls["file_id"].unique(maintain_order=True)):
            session.add(File(id=file_id, fingerprint=f"{n:064x}", carrier=CARRIER, kind="cdr", period="daily",
                             direction="outbound", original_name=f"benchco-{n:02d}.csv", size=1, channel="upload",
                             received_at=now, status="rated", updated_at=now))
        session.flush()
        session.execute(insert(Customer), [
            {"code": customer_code(n), "name": f"Customer {n:05d} Ltd", "billing_schedule": "monthly",
             "address": f"{n} High Street|Leeds\nLS1 1AA", "billing_email": f"billing@c{n:05d}.example",
             "tax_code": "zero" if n % ZERO_RATED_EVERY == 0 else "standard", "payment_terms_days": 30}
            for n in range(customers)])
        session.execute(insert(CustomerCharge), [
            {"customer": customer_code(n), "description": "Line rental", "amount": Decimal(RECURRING_PENNIES) / 100,
             "quantity": 1, "frequency": "monthly", "start": OCTOBER.start, "created_at": now, "created_by": "bench"}
            for n in range(customers) if n % RECURRING_EVERY == 1])
    t1 = time.perf_counter()
    insert_calls(database, calls)
    with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("ANALYZE")
    return t1 - t0, time.perf_counter() - t1


def insert_calls(database: Database, calls: pl.DataFrame) -> None:
    """Straight into ``calls``, one transaction: COPY of a CSV polars writes (PostgreSQL), or one
    ``executemany`` of plain tuples with times as SQLAlchemy's SQLite dialect writes them."""
    columns = ", ".join(f'"{c}"' for c in CALL_COLUMNS)
    with database.engine.begin() as connection:
        raw = connection.connection.driver_connection
        if connection.dialect.name == "postgresql":
            buffer = io.BytesIO()
            calls.write_csv(buffer, include_header=False, quote_style="non_numeric")
            with raw.cursor() as cursor, cursor.copy(f"COPY calls ({columns}) FROM STDIN (FORMAT csv)") as copy:
                copy.write(buffer.getvalue())
        else:
            rows = calls.with_columns(pl.col("start").dt.strftime("%Y-%m-%d %H:%M:%S%.6f")).rows()
            raw.executemany(f"INSERT INTO calls ({columns}) VALUES ({', '.join('?' * len(CALL_COLUMNS))})", rows)


OUTSTANDING = ("status = 'rated' AND NOT set_aside AND invoice_id IS NULL AND start < :end"
               " AND file_id IN (SELECT id FROM files WHERE status = 'rated')")
"""The calls a run claims (billing._claim_calls), as SQL."""


def measure_floor(database: Database, end_utc: datetime) -> tuple[float, int]:
    """Seconds for the run's arithmetic and writes as two set-based statements and their commit,
    and the calls they marked; undone afterwards (not timed), so the run starts from the same state."""
    end = end_utc if database.engine.dialect.name == "postgresql" else end_utc.replace(tzinfo=None)
    with database.engine.connect() as connection:
        connection.exec_driver_sql("CREATE TABLE bench_floor (id INTEGER PRIMARY KEY, customer VARCHAR(64), "
                                   "calls INTEGER, charge BIGINT)")
        connection.commit()
        started = time.perf_counter()
        connection.execute(text(f"INSERT INTO bench_floor (id, customer, calls, charge) SELECT "
                                f"row_number() OVER (ORDER BY customer), customer, count(*), sum(charge) "
                                f"FROM calls WHERE {OUTSTANDING} GROUP BY customer"), {"end": end})
        marked = connection.execute(text(f"UPDATE calls SET invoice_id = bench_floor.id FROM bench_floor "
                                         f"WHERE calls.customer = bench_floor.customer AND {OUTSTANDING}"),
                                    {"end": end}).rowcount
        connection.commit()
        seconds = time.perf_counter() - started
        # Undone by hand, not by a rollback: the commit is part of what the run costs, so of the floor.
        connection.exec_driver_sql("UPDATE calls SET invoice_id = NULL")
        connection.exec_driver_sql("DROP TABLE bench_floor")
        connection.commit()
    with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM ANALYZE calls" if connection.dialect.name == "postgresql" else "ANALYZE")
    return seconds, marked


# --- the run ---------------------------------------------------------------------------------


def close_runs(runtime: Runtime, customers: int) -> tuple[float, list[bytes]]:
    """October closed for every customer by one tick of the scheduler (``Scheduler.tick``: its
    customers ``TICK_CUSTOMERS`` to a transaction); seconds, and the run-closed events as the
    outbox holds them (read back after the clock stops)."""
    started = time.perf_counter()
    tick = Scheduler(runtime).tick(CLOSED_AT)
    seconds = time.perf_counter() - started
    assert len(tick.closed) == customers and not tick.failed, (len(tick.closed), tick.failed[:3])
    assert {run.period for run in tick.closed} == {OCTOBER}
    with runtime.database.transaction() as session:
        payloads = list(session.scalars(select(OutboxEntry.payload).where(OutboxEntry.publisher == SCHEDULER)
                                        .order_by(OutboxEntry.id)))
    return seconds, payloads


def issue_invoices(runtime: Runtime, payloads: list[bytes]) -> float:
    """The run-closed events decoded and handled ``BATCH_SIZE`` at a time, a transaction per
    batch, as the invoicer's service loop hands them to its batch handler (the steps of
    ``ServiceLoop._checkpoint_batch`` up to the commit; the handler yields nothing)."""
    invoicer = Invoicer(runtime)
    started = time.perf_counter()
    for first in range(0, len(payloads), BATCH_SIZE):
        events = [Event.from_bytes(payload) for payload in payloads[first:first + BATCH_SIZE]]
        with runtime.database.transaction() as session:
            assert list(invoicer.on_runs_closed(events, session)) == []
    return time.perf_counter() - started


@dataclass(frozen=True)
class Outcome:
    invoices: int
    lines: int
    calls_invoiced: int
    events: int
    numbers_gap_free: bool


def check_run(runtime: Runtime, expected: Expected, calls: int) -> Outcome:
    """What the run made, against what was worked out from the input; AssertionError if not."""
    issued_topic = topic_name(runtime.settings.namespace, Topic.INVOICE_ISSUED)
    with runtime.database.transaction() as session:
        rows = session.execute(select(Invoice.customer, Invoice.number, Invoice.net, Invoice.tax, Invoice.total)).all()
        lines = session.scalar(select(func.count()).select_from(Charge))
        calls_invoiced = session.scalar(select(func.count()).select_from(Call).where(Call.invoice_id.is_not(None)))
        events = session.scalar(select(func.count()).select_from(OutboxEntry).where(OutboxEntry.topic == issued_topic))
    figures = {customer: tuple(int(v * 100) for v in (net, tax, total)) for customer, _, net, tax, total in rows}
    if figures != expected.figures:
        wrong = sorted(c for c in expected.figures.keys() | figures.keys() if figures.get(c) != expected.figures.get(c))
        raise AssertionError(f"{len(wrong)} invoices differ from the recomputation, e.g. {wrong[0]}: "
                             f"stored {figures.get(wrong[0])}, expected {expected.figures.get(wrong[0])} (pennies)")
    numbers = sorted(int(number.removeprefix(runtime.settings.invoice_prefix)) for _, number, *_ in rows)
    outcome = Outcome(len(rows), lines or 0, calls_invoiced or 0, events or 0, numbers == list(range(1, len(rows) + 1)))
    assert (outcome.lines, outcome.calls_invoiced, outcome.events) == (expected.lines, calls, len(rows)), outcome
    assert outcome.numbers_gap_free, "invoice numbers are not 1..N"
    return outcome


def render_pdfs(runtime: Runtime, count: int) -> tuple[float, int]:
    """Seconds to render ``count`` invoices' PDFs (the first by id), and their total bytes."""
    with runtime.database.transaction() as session:
        ids = list(session.scalars(select(Invoice.id).order_by(Invoice.id).limit(count)))
    size = 0
    started = time.perf_counter()
    for invoice_id in ids:
        with runtime.database.transaction() as session:
            pdf = invoice_pdf(session, session.get(Invoice, invoice_id), runtime.settings)
        assert pdf.startswith(b"%PDF"), pdf[:16]
        size += len(pdf)
    return time.perf_counter() - started, size


# --- main ------------------------------------------------------------------------------------


def service_logs_to(sink: io.TextIOBase) -> None:
    """The invoicer's structured logs at INFO, as it runs, into ``sink`` (not this output)."""
    configure_logging("INFO", service="invoicer")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sink))


def say(line: str) -> None:
    print(line, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--calls-each", type=int, default=100)
    parser.add_argument("--pdfs", type=int, default=200, help="invoices whose PDF is rendered after the run")
    parser.add_argument("--database-url", help="a PostgreSQL server (postgresql+psycopg://…); default SQLite")
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke run: {QUICK['customers']} customers × {QUICK['calls_each']} calls, "
                             f"{QUICK['pdfs']} PDFs")
    args = parser.parse_args()
    if args.quick:
        args.customers, args.calls_each, args.pdfs = QUICK["customers"], QUICK["calls_each"], QUICK["pdfs"]
    if args.customers < 1 or args.calls_each < 1 or args.pdfs < 0:
        parser.error("--customers and --calls-each must be at least 1, --pdfs at least 0")
    total_calls = args.customers * args.calls_each

    made = time.perf_counter()
    calls = generate_calls(args.customers, args.calls_each)
    expected = expected_invoices(calls, args.customers)
    made = time.perf_counter() - made
    with tempfile.TemporaryDirectory(prefix="bench-billing-") as work, \
            fresh_database(args.database_url, Path(work), "bench_billing") as url:
        data_dir = Path(work)
        settings = Settings(data_dir=data_dir, database_url=url, seller_name="Bench Telecom Ltd",
                            seller_address="1 Bench Row|Leeds\nLS1 1AA", seller_vat_number="GB123456789",
                            seller_email="billing@bench.example")
        log_path = data_dir / "invoicer.log"
        log_sink = log_path.open("w")
        service_logs_to(log_sink)
        runtime = Runtime(settings, "invoicer")
        try:
            backend = backend_name(runtime.database)
            say(header(f"billing run: {args.customers:,} customers × {args.calls_each:,} calls "
                       f"({total_calls:,} calls), October 2026, on {backend}"))
            reference_s, calls_s = set_up(runtime.database, calls, args.customers)
            recurring = sum(1 for n in range(args.customers) if n % RECURRING_EVERY == 1)
            say(f"set-up (not timed): input generated in {made:.2f} s; {args.customers:,} customers "
                f"({args.customers // ZERO_RATED_EVERY + (args.customers % ZERO_RATED_EVERY > 0):,} zero-rated, "
                f"{recurring:,} with a recurring charge) in {reference_s:.2f} s; {total_calls:,} calls "
                f"in {FILES} rated files inserted in bulk in {calls_s:.2f} s")
            n = args.customers
            floor_s, marked = measure_floor(runtime.database, OCTOBER.utc_bounds(settings.zone)[1])
            assert marked == total_calls, (marked, total_calls)
            say(f"floor: one INSERT … SELECT customer, count(*), sum(charge) … GROUP BY customer and one UPDATE "
                f"marking the {marked:,} calls, one transaction: {floor_s:.2f} s")
            close_s, payloads = close_runs(runtime, n)
            say(f"close: {n:,} billing runs (Scheduler.tick, {TICK_CUSTOMERS} to a transaction): {close_s:7.2f} s "
                f"{n / close_s:8,.0f} runs/s")
            issue_s = issue_invoices(runtime, payloads)
            say(f"issue: {n:,} invoices (on_runs_closed, {BATCH_SIZE} to a transaction): {issue_s:7.2f} s "
                f"{n / issue_s:8,.0f} invoices/s {total_calls / issue_s:10,.0f} calls/s {issue_s / floor_s:6.1f}× floor")
            run_s = close_s + issue_s
            goal = ""
            if (n, args.calls_each) == (10_000, 100):
                goal = f" | goal ≤ {GOAL_S:.0f} s: {'met' if run_s <= GOAL_S else 'NOT MET'}"
            say(f"run (close + issue): {run_s:.2f} s, {n / run_s:,.0f} invoices/s, {run_s / floor_s:.1f}× floor{goal}")
            outcome = check_run(runtime, expected, total_calls)
            log_sink.flush()
            with log_path.open() as logs:
                logged = sum(1 for line in logs if '"invoice_issued"' in line)
            say(f"made: {outcome.invoices:,} invoices (numbers 1..{outcome.invoices:,}, gap-free), "
                f"{outcome.lines:,} lines, {outcome.events:,} invoice-issued events in the outbox, "
                f"{outcome.calls_invoiced:,} calls invoiced, {logged:,} invoice_issued log lines; every net, VAT "
                f"and total equal to the recomputation from the generated calls and charges")
            if rendered := min(args.pdfs, n):
                pdf_s, pdf_bytes = render_pdfs(runtime, rendered)
                say(f"PDFs: {rendered:,} rendered (invoice_pdf) in {pdf_s:.2f} s, {rendered / pdf_s:,.1f} PDFs/s, "
                    f"{pdf_bytes / rendered / 1024:.1f} KiB each")
        finally:
            runtime.database.dispose()
            log_sink.close()
    one, five, fifteen = os.getloadavg()
    print(f"load average at the end {one:.2f} {five:.2f} {fifteen:.2f} (1, 5, 15 min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
