"""Parser benchmarks (issue: carrier formats). Run: .venv/bin/python bench/bench_parse.py [--rows N]

Prints, on this machine, in one run, for ``generic-cdr`` and ``gamma``:
- the parser library (``services.parser.api.parse_file``: decode, split, read every field,
  reject bad rows) over an N-row file, in rows/s (target: at least 500,000 rows/s);
- beside it, the time polars (the fastest CSV reader available here) takes merely to read
  the same file as strings, and the ratio of the two.
Each figure is the best of three runs (the machine is shared). Data is generated once into
bench/.data (ignored by git); about 1% of the rows are bad, so rejections are exercised.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl

DATA = Path(__file__).resolve().parent / ".data"
DATA_VERSION = "v1"  # part of every generated file's name: bump it when the generator changes
MONTH_SECONDS = 31 * 86_400  # calls spread over October 2026 (the clocks go back on the 25th)
TARGET = 500_000
GAMMA_COLUMNS = (
    "Call Type", "Call Cause Definition Required", "Customer Identifier", "Non-Charged Party", "Call Date",
    "Call Time", "Duration", "Bytes Transmitted", "Bytes Received", "Description", "Chargecode", "Time Band",
    "Salesprice", "Salesprice (pre-bundle)", "Extension", "DDI", "Grouping ID", "Call Class (Feature)", "Carrier",
    "Recording", "VAT", "Country of Origin", "Network", "Retail tariff code", "Remote Network", "APN",
    "Diverted Number", "Ring time", "Record ID", "Currency", "Caller Line Identity", "Network Access Reference",
    "NGCS Access Charge", "NGCS Service Charge", "Total Bytes Transferred", "User ID", "Onward Billing Reference",
    "Contract Name", "Bundle Name", "Bundle Allowance", "Discount Reference", "Routing Code",
)


def _calls(first: int, rows: int, total: int) -> pl.DataFrame:
    """Columns every generator shares: cli, dialled, start (naive local), duration, cost (text), bad."""
    i = pl.int_range(first, first + rows, eager=True).alias("i")
    h1, h2, h3 = (pl.col("i").hash(s) for s in (21, 22, 23))
    seconds = pl.col("i") * MONTH_SECONDS // total
    duration = pl.when(h2 % 100 < 8).then(0).otherwise(1 + h3 % 900)
    cost_tenth_milli = duration * (5 + h1 % 40) // 60
    return pl.DataFrame(i).select(
        cli=pl.lit("+44") + (1_632_960_000 + h1 % 50_000).cast(pl.String),
        dialled=pl.lit("0") + (1_174_960_000 + h3 % 9_000_000).cast(pl.String),
        start=pl.datetime(2026, 10, 1) + pl.duration(seconds=seconds),
        duration=duration,
        cost=(cost_tenth_milli // 10_000).cast(pl.String) + "."
        + (cost_tenth_milli % 10_000).cast(pl.String).str.pad_start(4, "0"),
        bad=h2 % 100 == 99,
        charge=pl.lit(pl.Series(["BRS", "MOB", "FRA", "LON", "INT"])).gather(h1 % 5),
        record=(pl.col("i") + 900_000_000).cast(pl.String),
    )


def generic_chunk(first: int, rows: int, total: int) -> pl.DataFrame:
    c = _calls(first, rows, total)
    return c.select(
        "cli", "dialled",
        start=pl.when(pl.col("bad")).then(pl.lit("2026-10-32T09:00:00"))
        .otherwise(pl.col("start").dt.strftime("%Y-%m-%dT%H:%M:%S")),
        duration="duration", cost="cost", charge_code="charge",
    )


def gamma_chunk(first: int, rows: int, total: int) -> pl.DataFrame:
    c = _calls(first, rows, total)
    blank = pl.lit("")
    values = {name: blank for name in GAMMA_COLUMNS}
    values |= {
        "Call Type": pl.lit("V"),
        "Customer Identifier": pl.lit("0") + pl.col("cli").str.slice(3),
        "Non-Charged Party": pl.col("dialled"),
        "Call Date": pl.when(pl.col("bad")).then(pl.lit("31/09/2026")).otherwise(pl.col("start").dt.strftime("%d/%m/%Y")),
        "Call Time": pl.col("start").dt.strftime("%H:%M:%S"),
        "Duration": pl.col("duration").cast(pl.String),
        "Description": pl.lit("Bristol"),
        "Chargecode": pl.col("charge"),
        "Time Band": pl.lit("1"),
        "Salesprice": pl.col("cost"),
        "Salesprice (pre-bundle)": pl.col("cost"),
        "Carrier": pl.lit("GAMMA"),
        "VAT": pl.lit("S"),
        "Country of Origin": pl.lit("UK"),
        "Network": pl.lit("GAMMA"),
        "Record ID": pl.col("record"),
        "Currency": pl.lit("GBP"),
        "Caller Line Identity": pl.lit("0") + pl.col("cli").str.slice(3),
    }
    return c.select(**values)


def make(path: Path, rows: int, chunk_fn: Callable[[int, int, int], pl.DataFrame], *, quote_all: bool,
         chunk: int = 1_000_000) -> None:
    if path.exists():
        return
    DATA.mkdir(exist_ok=True)
    partial = path.with_suffix(".partial")
    with partial.open("wb") as out:
        for first in range(0, rows, chunk):
            chunk_fn(first, min(chunk, rows - first), rows).write_csv(
                out, include_header=first == 0, quote_style="always" if quote_all else "necessary")
    partial.rename(path)


def best_of(runs: int, fn: Callable[[], object]) -> tuple[object, float]:
    best, result = float("inf"), None
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return result, best


def parse_all(path: Path, fmt: str) -> tuple[int, int]:
    from services.parser.api import parse_file

    records = rejected = 0
    for batch in parse_file(path, fmt, zone=ZoneInfo("Europe/London")):
        records += batch.records.height
        rejected += len(batch.rejects)
    return records, rejected


def bare_read(path: Path) -> int:
    return pl.read_csv(path, infer_schema=False).height


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cases = [
        ("generic-cdr", DATA / f"parse-generic-cdr-{args.rows}-{DATA_VERSION}.csv", generic_chunk, False),
        ("gamma", DATA / f"parse-gamma-{args.rows}-{DATA_VERSION}.csv", gamma_chunk, True),
    ]
    for fmt, path, chunk_fn, quote_all in cases:
        make(path, args.rows, chunk_fn, quote_all=quote_all)
        size = path.stat().st_size / 1024**2
        _, read_s = best_of(args.runs, lambda p=path: bare_read(p))
        (records, rejected), parse_s = best_of(args.runs, lambda p=path, f=fmt: parse_all(p, f))  # type: ignore[misc]
        rate = args.rows / parse_s
        verdict = "meets" if rate >= TARGET else "BELOW"
        print(f"{fmt}: {args.rows:,} rows ({size:,.0f} MiB): parsed in {parse_s:.2f}s = {rate:,.0f} rows/s "
              f"({verdict} the target of {TARGET:,}); {records:,} records, {rejected:,} rejected")
        print(f"  baseline: polars.read_csv of the same file (strings, no checks): {read_s:.2f}s "
              f"= {args.rows / read_s:,.0f} rows/s; the parser takes {parse_s / read_s:.1f}× the bare read")


if __name__ == "__main__":
    main()
