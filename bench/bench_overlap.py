"""Overlap check benchmark (issue: duplicate files). Run: .venv/bin/python bench/bench_overlap.py [--stored N] [--calls M]

Prints, on this machine, in one run:
- the baseline: the time to store a file of M calls (default 1,000,000; half of them repeat
  stored calls) in the calls table as the invoicer did before the check (``insert_new`` on
  (file, row)), a batch of the service's batch size per transaction;
- the time to store them with the overlap check (claim each call's usage key, read back who
  holds the keys already claimed) against N stored calls (default 10,000,000), in the same
  transactions, and the check's own cost (the difference) in calls/s and relative to storing.
The database is SQLite (the embedded default) in bench/.data; the stored calls' claims are
generated once per size and reused.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import polars as pl  # noqa: E402
from sqlalchemy import text  # noqa: E402

from cdrflow.db import Database, migrate  # noqa: E402
from cdrflow.db.models import Call, CallUsageClaim  # noqa: E402
from cdrflow.db.upsert import insert_new  # noqa: E402
from services.invoicer.overlap import usage_key  # noqa: E402
from services.invoicer.ledger import CALL_COLUMNS, store_calls  # noqa: E402

DATA = Path(__file__).resolve().parent / ".data"
DATA_VERSION = "v3"
EPOCH = datetime(2026, 10, 1, tzinfo=UTC)
FILE_ID = "00000000-0000-0000-0000-00000000f11e"


def call(i: int) -> tuple[str, str, datetime, int]:
    """The i-th synthetic call: CLI, dialled, start, duration."""
    return f"4416{i % 900_000:06d}", f"44{(i * 7919) % 10**9:09d}", EPOCH + timedelta(seconds=i * 0.37), 30 + i % 600


def stored_database(stored: int) -> Path:
    path = DATA / f"overlap-{DATA_VERSION}-{stored}.db"
    if path.exists():
        return path
    DATA.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    url = f"sqlite:///{tmp}"
    migrate(url)
    database = Database(url)
    started = time.perf_counter()
    with database.transaction() as session:
        session.execute(text("INSERT INTO carriers (code, name, file_format, hold_same_name) "
                             "VALUES ('gamma', 'Gamma', 'generic-cdr', false)"))
        for lo in range(0, stored, 100_000):
            rows = []
            for i in range(lo, min(lo + 100_000, stored)):
                cli, dialled, start, duration = call(i)
                second, digest = usage_key("gamma", cli, dialled, start, duration)
                rows.append({"usage_start": second, "usage_hash": digest, "file_id": "stored", "row": i + 2})
            session.execute(CallUsageClaim.__table__.insert(), rows)
    database.dispose()
    tmp.rename(path)
    print(f"(generated {stored:,} stored calls' claims in {time.perf_counter() - started:.0f} s)")
    return path


def file_batches(calls: int, stored: int, batch: int) -> Iterator[list[dict]]:
    """A file of ``calls`` calls in batches, in time order as carriers write them: even rows repeat
    the newest stored calls (a monthly file repeating the daily files), odd rows are new calls.
    Generated batch by batch, the same each time, so memory stays flat."""
    first_repeated = max(stored - calls // 2, 0)
    for lo in range(0, calls, batch):
        rows = []
        for n in range(lo, min(lo + batch, calls)):
            i = first_repeated + n // 2 if n % 2 == 0 else stored + n
            cli, dialled, start, duration = call(i)
            rows.append({"file_id": FILE_ID, "row": n + 2, "carrier": "gamma", "direction": "outbound",
                         "cli": cli, "dialled": dialled, "start": start, "duration": duration, "answered": True,
                         "charge_code": None, "account_code": None, "cdr_cost": None, "customer": None,
                         "tariff": None, "code": None, "destination": None, "band": None,
                         "billable_seconds": None, "charge": None, "cost": None, "status": "unmatched",
                         "reason": None})
        yield rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stored", type=int, default=10_000_000)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000, help="calls per call-rated batch (settings.batch_size)")
    args = parser.parse_args()

    source = stored_database(args.stored)
    store_s, _ = run(source, args, check=False)
    both_s, overlapping = run(source, args, check=True)
    assert overlapping == (args.calls + 1) // 2, overlapping
    check_s = both_s - store_s
    print(f"baseline, storing {args.calls:,} calls as the invoicer did before (insert_new on (file, row)): "
          f"{store_s:.1f} s ({args.calls / store_s:,.0f} calls/s)")
    print(f"storing them with the overlap check against {args.stored:,} stored calls: {both_s:.1f} s "
          f"({args.calls / both_s:,.0f} calls/s); {overlapping:,} overlapping found")
    print(f"the check's own cost: {check_s:.1f} s ({args.calls / max(check_s, 1e-9):,.0f} calls/s), "
          f"{check_s / store_s:+.0%} on storing")


def run(source: Path, args: argparse.Namespace, *, check: bool) -> tuple[float, int]:
    """Store the file's calls batch by batch, each batch one transaction as in the invoicer, with
    or without the overlap check; returns seconds (generating the calls excluded) and overlaps found."""
    work = DATA / "overlap-run.db"
    shutil.copyfile(source, work)
    database = Database(f"sqlite:///{work}")
    with database.transaction() as session:
        session.execute(text(
            "INSERT INTO files (id, fingerprint, carrier, kind, period, direction, original_name, size, channel,"
            " received_at, status, updated_at, overlap_policy) VALUES (:id, :fp, 'gamma', 'cdr', 'monthly',"
            " 'outbound', 'bench.csv', 1, 'upload', '2026-11-01 00:00:00', 'accepted', '2026-11-01 00:00:00',"
            " 'skip')"), {"id": FILE_ID, "fp": "0" * 64})
    overlapping, seconds = 0, 0.0
    for part in file_batches(args.calls, args.stored, args.batch):
        started = time.perf_counter()
        with database.transaction() as session:
            if check:  # the calls ledger: claims, marks and calls, as the invoicer stores a batch
                stored = store_calls(session, pl.DataFrame(part, schema=CALL_COLUMNS),
                                     overlap_policy_of=lambda _file: "skip")
                overlapping += stored.overlapping
            else:
                for r in part:
                    r["overlaps_file_id"], r["set_aside"] = None, False
                insert_new(session, Call.__table__, part, key=("file_id", "row"))
        seconds += time.perf_counter() - started
    database.dispose()
    work.unlink()
    return seconds, overlapping


if __name__ == "__main__":
    main()
