"""Rating benchmarks (issue: rating engine). Run: .venv/bin/python bench/bench_rate.py [--rows N] [--skip-memory]

Prints, on this machine, in one run:
- the time to load (validate and compile) a 200,000-row rate deck;
- ``cdrflow rate`` end to end (read, rate, write) over a 1,000,000-call file against that deck
  and 50,000 CLIs, in calls/s, beside the time polars (the fastest CSV reader available here)
  takes merely to read the same file, and the ratio of the two;
- the peak RSS of ``cdrflow rate`` over a 10,000,000-row file (memory must stay flat).
Data is generated once into bench/.data (ignored by git).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

DATA = Path(__file__).resolve().parent / ".data"
DECK_ROWS = 200_000
CLIS = 50_000


def make_deck(path: Path) -> None:
    if path.exists():
        return
    n = pl.int_range(0, DECK_ROWS, eager=True)
    # 200,000 distinct dial prefixes of 3 to 9 digits under +44 and a few other countries
    codes = (pl.select(pl.lit("44") + (n * 7919 % 10_000_000 + 100).cast(pl.String)).to_series()).unique()
    while codes.len() < DECK_ROWS:
        codes = pl.concat([codes, pl.Series([f"1{i}" for i in range(DECK_ROWS - codes.len())])]).unique()
    deck = pl.DataFrame({"code": codes.head(DECK_ROWS)}).with_columns(
        destination=pl.lit("Destination ") + pl.col("code"), peak=pl.lit("0.0150"), offpeak=pl.lit("0.0100"),
        weekend=pl.lit("0.0050"), setup=pl.lit("0.0100"), minimum=pl.lit("0"), increments=pl.lit("60/1"))
    deck.write_csv(path)


def make_customers(path: Path) -> None:
    if path.exists():
        return
    i = pl.int_range(0, CLIS, eager=True)
    pl.select(customer=pl.lit("C") + (i // 10).cast(pl.String),
              cli=pl.lit("+441632") + i.cast(pl.String).str.pad_start(6, "0")).write_csv(path)


def make_cdrs(path: Path, rows: int) -> None:
    if path.exists():
        return
    i = pl.int_range(0, rows, eager=True)
    start = pl.datetime(2026, 10, 1) + pl.duration(seconds=i * 2)
    pl.select(
        cli=pl.lit("+441632") + (i * 7 % (CLIS + 500)).cast(pl.String).str.pad_start(6, "0"),
        dialled=pl.lit("0") + (i * 104729 % 8_999_999_999 + 1_000_000_000).cast(pl.String),
        start=start.dt.strftime("%Y-%m-%dT%H:%M:%S"),
        duration=(i * 37 % 900),
    ).write_csv(path)


def timed(fn):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def run_rate(cdrs: Path, deck: Path, customers: Path, out: Path) -> tuple[float, int, str]:
    """``cdrflow rate`` as an operator runs it; returns wall time, peak RSS (KiB) and its summary."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cdrflow", "rate", "--rates", str(deck), "--customers", str(customers),
                           str(cdrs), "-o", str(out)], check=True, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return elapsed, max(peak, before), done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--skip-memory", action="store_true", help="skip the 10,000,000-row memory run")
    args = parser.parse_args()
    DATA.mkdir(exist_ok=True)
    deck, customers = DATA / "deck-200k.csv", DATA / "customers-50k.csv"
    cdrs = DATA / f"cdrs-{args.rows}.csv"
    make_deck(deck)
    make_customers(customers)
    make_cdrs(cdrs, args.rows)

    from services.rater.ratesheet import read_rate_sheet

    sheet, load_s = timed(lambda: read_rate_sheet(deck))
    print(f"rate deck: {len(sheet):,} rows validated and loaded in {load_s:.2f}s (target: at most 2 s)")

    _, read_s = timed(lambda: pl.read_csv(cdrs))
    elapsed, _, summary = run_rate(cdrs, deck, customers, DATA / "rated.csv")
    print(f"baseline: polars.read_csv of {args.rows:,} calls: {read_s:.2f}s")
    print(f"cdrflow rate: {args.rows:,} calls in {elapsed:.2f}s = {args.rows / elapsed:,.0f} calls/s end to end "
          f"(target ≥ 300,000), {elapsed / read_s:.1f}× the bare read (target ≤ 3; includes process start-up)")
    print(f"  its summary: {summary}")

    if not args.skip_memory:
        big = DATA / "cdrs-10000000.csv"
        make_cdrs(big, 10_000_000)
        elapsed, peak_kib, _ = run_rate(big, deck, customers, DATA / "rated-10m.csv")
        print(f"memory: 10,000,000 calls in {elapsed:.1f}s, peak RSS {peak_kib / 1024:,.0f} MiB (target ≤ 1,536 MiB)")
        (DATA / "rated-10m.csv").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
