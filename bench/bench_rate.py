"""Rating benchmarks (issue: rating engine). Run: .venv/bin/python bench/bench_rate.py [--rows N] [--skip-memory]

Prints, on this machine, in one run:
- the time to load (validate and compile) a 200,000-row rate deck;
- ``cdrflow rate`` end to end (read, rate, write) over a 1,000,000-call file against that deck
  and 50,000 CLIs, in calls/s, beside the time polars (the fastest CSV reader available here)
  takes merely to read the same file, and the ratio of the two;
- the peak RSS of ``cdrflow rate`` over a 10,000,000-row file (memory must stay flat).
Data is generated once into bench/.data (ignored by git; file names carry DATA_VERSION): a
deck shaped like a real wholesale deck (nested UK codes, North American NPA-NXX codes, the rest
of the world by country and subcode), customers' DDIs, DDI blocks and ranges, and calls dialled
as people dial them to the deck's destinations, so most calls are rated and a few are
unmatched (unknown CLI) or unrated (UK premium, international networks).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

DATA = Path(__file__).resolve().parent / ".data"
RUNS = 3
DATA_VERSION = "v2"  # part of every generated file's name: bump it when the generator changes
DECK_ROWS = 200_000
CLIS = 50_000
MONTH_SECONDS = 31 * 86_400  # calls are spread over October 2026 (the clocks go back on the 25th)

# Country codes of the rest of the world (not +1, not +44), each with its own subcodes in the deck.
WORLD = ("7", "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "45", "46", "47", "48", "49",
         "51", "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63", "64", "65", "66", "81", "82", "84",
         "86", "90", "91", "92", "93", "94", "95", "98", "212", "213", "216", "218", "220", "221", "233", "234", "254",
         "255", "256", "260", "263", "351", "352", "353", "354", "356", "357", "358", "359", "370", "371", "372",
         "380", "381", "385", "386", "420", "421", "852", "880", "886", "961", "962", "965", "966", "971", "972",
         "974")
# Dialled but in no deck: UK premium rate (09…) and international networks (+882, +883) → ``unrated``.
NOT_IN_DECK = ("449", "882", "883")
# Geographic area codes of the customers' DDIs (national significant numbers are 10 digits).
AREAS = ("20", "23", "24", "28", "29", "113", "114", "115", "116", "117", "118", "121", "131", "141", "151", "161",
         "191", "239", "247", "289")
UNKNOWN_CLI_SHARE, UNRATED_SHARE = 0.02, 0.02


def _digits(h: pl.Expr, n: int) -> pl.Expr:
    """``n`` pseudo-random decimal digits from a hash column."""
    return (h % 10**n).cast(pl.String).str.pad_start(n, "0")


def _hash(i: pl.Expr, seed: int) -> pl.Expr:
    return i.hash(seed)


def deck_codes() -> pl.DataFrame:
    """200,000 distinct dial prefixes shaped like a real wholesale deck: nested UK codes
    (441, 4412, 44121, 441214 …; mobiles 447…; no catch-all 44, so UK premium 09… is unpriced), North American NPA-NXX codes (1NPANXX)
    and the rest of the world's country codes with their subcodes; ``region`` says which."""
    uk = [f"44{lead}{rest}" for lead in "12378" for n in range(4) for rest in
          (f"{x:0{n}d}" for x in range(10**n)) if n or not rest]
    uk += [f"44{lead}{x:04d}" for lead in "127" for x in range(10_000)]
    world = [f"{cc}{rest}" for cc in WORLD for n in range(3) for rest in (f"{x:0{n}d}" for x in range(10**n))
             if n or not rest]
    nanp = [f"1{npa}" for npa in range(201, 990)]
    fixed = pl.DataFrame({"code": [*uk, *world, *nanp]}).unique(maintain_order=True)
    fixed = fixed.with_columns(region=pl.col("code").str.slice(0, 1).replace_strict(
        {"4": "uk", "1": "nanp"}, default="world"))
    fixed = fixed.with_columns(region=pl.when(pl.col("code").str.starts_with("447")).then(pl.lit("uk-mobile"))
                               .otherwise("region"))
    # Fill up to DECK_ROWS with 1NPANXX codes (two thirds) and 3-digit subcodes of other countries.
    room = DECK_ROWS - fixed.height
    npanxx = pl.DataFrame({"code": [f"1{npa}{nxx}" for npa in range(201, 990) for nxx in range(200, 1000)]})
    sub3 = pl.DataFrame({"code": [f"{cc}{x:03d}" for cc in WORLD for x in range(1000)]})
    take_nanp = room * 2 // 3
    extra = pl.concat([
        npanxx.sort(_hash(pl.col("code"), 1)).head(take_nanp).with_columns(region=pl.lit("nanp")),
        sub3.sort(_hash(pl.col("code"), 2)).head(room - take_nanp).with_columns(region=pl.lit("world")),
    ])
    codes = pl.concat([fixed, extra])
    assert codes.height == DECK_ROWS and codes["code"].n_unique() == DECK_ROWS
    return codes


def make_deck(path: Path) -> None:
    """Rates by region: UK geographic cheap with a set-up charge and 60/1 increments, mobiles
    1/1, North America 60/60, the rest of the world dearer with 30/6 and a minimum charge."""
    if path.exists():
        return
    codes = deck_codes()
    h = _hash(pl.col("code"), 3)
    micros = lambda low, high: (low + h % (high - low)).cast(pl.Int64)  # noqa: E731
    as_text = lambda m: (m // 10_000).cast(pl.String) + "." + (m % 10_000).cast(pl.String).str.pad_start(4, "0")  # noqa: E731
    region = pl.col("region")
    peak = pl.when(region == "uk").then(micros(80, 150)).when(region == "uk-mobile").then(micros(250, 400))         .when(region == "nanp").then(micros(50, 120)).otherwise(micros(200, 9000))  # in 1/10,000 of a pound
    deck = codes.with_columns(peak=peak).select(
        "code",
        destination=pl.format("{} {}", region.replace_strict(
            {"uk": "United Kingdom", "uk-mobile": "UK Mobile", "nanp": "North America"}, default="International"),
            pl.col("code")),
        peak=as_text(pl.col("peak")),
        offpeak=as_text(pl.col("peak") * 2 // 3),
        weekend=as_text(pl.col("peak") // 2),
        setup=pl.when(region == "uk").then(pl.lit("0.0100")).otherwise(pl.lit("0")),
        minimum=pl.when(region == "world").then(pl.lit("0.0500")).otherwise(pl.lit("0")),
        increments=region.replace_strict({"uk": "60/1", "uk-mobile": "1/1", "nanp": "60/60"}, default="30/6"),
    )
    deck.sort(_hash(pl.col("code"), 4)).write_csv(path)  # a deck is in no useful order


def customer_clis() -> pl.DataFrame:
    """50,000 CLIs of 5,000 customers: single DDIs (94%), DDI blocks written as prefixes ``+44…*``
    (5%) and DDI ranges ``FROM-TO`` of 100 numbers (1%); ``number`` is a number each claims."""
    i = pl.int_range(0, CLIS, eager=True).alias("i")
    area = pl.lit(pl.Series(AREAS)).gather(pl.col("i") % len(AREAS))
    local_len = 10 - area.str.len_chars()
    lead = pl.when(pl.col("i") % 100 < 94).then(pl.lit("4")).when(pl.col("i") % 100 < 99).then(pl.lit("7"))         .otherwise(pl.lit("8"))
    # leading digit 4: DDI; 7: prefix (2 digits open); 8: range …00-…99. A serial of CLIS // len(AREAS)
    # fits the 4+ digits left after a 2- or 3-digit area, the lead digit and the last two digits.
    serial = (pl.col("i") // len(AREAS)).cast(pl.String)
    stem = pl.lit("44") + area + lead + serial.str.pad_start(local_len - 3, "0")
    df = pl.DataFrame(i).with_columns(kind=lead, stem=stem)
    full = pl.col("stem") + (pl.col("i") % 100).cast(pl.String).str.pad_start(2, "0")
    return df.select(
        customer=pl.lit("C") + (pl.col("i") // 10).cast(pl.String).str.pad_start(5, "0"),
        cli=pl.when(pl.col("kind") == "4").then(pl.lit("+") + full)
        .when(pl.col("kind") == "7").then(pl.lit("+") + pl.col("stem") + "*")
        .otherwise(pl.lit("+") + pl.col("stem") + "00-+" + pl.col("stem") + "99"),
        number=full,
    )


def make_customers(path: Path) -> None:
    if not path.exists():
        customer_clis().select("customer", "cli").write_csv(path)


def cdr_chunk(first: int, rows: int, total: int, codes: pl.DataFrame, clis: pl.Series) -> pl.DataFrame:
    """Calls ``first`` … ``first + rows - 1`` of a ``total``-call month. Dialled numbers are
    built on the deck's own codes (so most are rated, by their longest prefix): UK geographic
    45%, UK mobile 25%, North America 10%, elsewhere 18%, none the deck prices 2%; written as
    people dial them (0…, 00…, some +…). CLIs are the customers' numbers, written three ways;
    2% are nobody's. 8% of calls are unanswered (0 s)."""
    i = pl.int_range(first, first + rows, eager=True).alias("i")
    h1, h2, h3, h4 = (_hash(pl.col("i"), s) for s in (11, 12, 13, 14))
    pools = {name: codes.filter(pl.col("region") == name)["code"] for name in ("uk", "uk-mobile", "nanp", "world")}
    pools["none"] = pl.Series([f"{p}{x}" for p in NOT_IN_DECK for x in range(10)])
    shares = {"uk": 0.45, "uk-mobile": 0.25, "nanp": 0.10, "world": 0.18, "none": UNRATED_SHARE}
    pick = h1 % 10_000
    branches, low = [], 0
    for name, share in shares.items():
        low += round(share * 10_000)
        branches.append((low, name))
    expr = pl.lit(branches[-1][1])
    for high, name in reversed(branches[:-1]):
        expr = pl.when(pick < high).then(pl.lit(name)).otherwise(expr)
    df = pl.DataFrame(i).with_columns(region=expr)
    code = pl.lit(None, pl.String)
    for name, pool in pools.items():
        code = pl.when(pl.col("region") == name).then(pl.lit(pool).gather(h2 % len(pool))).otherwise(code)
    df = df.with_columns(code=code)
    length = pl.max_horizontal(pl.col("code").str.len_chars() + 4,
                               pl.when(pl.col("region") == "nanp").then(11).otherwise(12))
    digits = pl.col("code") + _digits(h3, 12).str.slice(0, length - pl.col("code").str.len_chars())
    uk = pl.col("region").is_in(["uk", "uk-mobile"]) | pl.col("code").str.starts_with("44")
    dialled = pl.when(uk & (h4 % 20 != 0)).then(pl.lit("0") + digits.str.slice(2))         .when(h4 % 10 == 1).then(pl.lit("+") + digits).otherwise(pl.lit("00") + digits)
    known = pl.lit(clis).gather(h4 % len(clis))
    cli = pl.when(h1 % 100 < round(UNKNOWN_CLI_SHARE * 100)).then(pl.lit("44") + "1632999" + _digits(h2, 3))         .otherwise(known)
    written = pl.when(h3 % 10 < 7).then(pl.lit("+") + cli).when(h3 % 10 < 9).then(pl.lit("0") + cli.str.slice(2))         .otherwise(cli)
    seconds = pl.col("i") * MONTH_SECONDS // total + h2 % 3
    answer = h2 % 100
    duration = pl.when(answer < 8).then(0).when(answer < 90).then(1 + h3 % 300).otherwise(1 + h3 % 3600)
    return df.select(
        cli=written,
        dialled=dialled,
        start=(pl.datetime(2026, 10, 1) + pl.duration(seconds=seconds)).dt.strftime("%Y-%m-%dT%H:%M:%S"),
        duration=duration,
    )


def make_cdrs(path: Path, rows: int, chunk: int = 1_000_000) -> None:
    if path.exists():
        return
    codes = deck_codes()
    clis = customer_clis()["number"]
    partial = path.with_suffix(".partial")
    with partial.open("wb") as out:
        for first in range(0, rows, chunk):
            cdr_chunk(first, min(chunk, rows - first), rows, codes, clis).write_csv(out, include_header=first == 0)
    partial.rename(path)


def timed(fn):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def run_rate(cdrs: Path, deck: Path, customers: Path, out: Path) -> tuple[float, int, str]:
    """``cdrflow rate`` as an operator runs it; returns wall time, peak RSS (KiB) and its summary."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cdrflow_app", "rate", "--rates", str(deck), "--customers", str(customers),
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
    deck, customers = DATA / f"deck-200k-{DATA_VERSION}.csv", DATA / f"customers-50k-{DATA_VERSION}.csv"
    cdrs = DATA / f"cdrs-{args.rows}-{DATA_VERSION}.csv"
    make_deck(deck)
    make_customers(customers)
    make_cdrs(cdrs, args.rows)

    from services.rater.ratesheet import read_rate_sheet

    sheet, load_s = timed(lambda: read_rate_sheet(deck))
    print(f"rate deck: {len(sheet):,} rows validated and loaded in {load_s:.2f}s (target: at most 2 s)")

    # Medians of RUNS runs each: on 2 shared cores single runs vary by ±15 %.
    read_s = statistics.median(timed(lambda: pl.read_csv(cdrs))[1] for _ in range(RUNS))
    runs = [run_rate(cdrs, deck, customers, DATA / "rated.csv") for _ in range(RUNS)]
    elapsed, summary = statistics.median(r[0] for r in runs), runs[-1][2]
    print(f"baseline: polars.read_csv of {args.rows:,} calls: {read_s:.2f}s (median of {RUNS})")
    print(f"cdrflow rate: {args.rows:,} calls in {elapsed:.2f}s = {args.rows / elapsed:,.0f} calls/s end to end "
          f"(median of {RUNS}: {', '.join(f'{r[0]:.2f}s' for r in runs)}; target ≥ 300,000), "
          f"{elapsed / read_s:.1f}× the bare read (target ≤ 3; includes process start-up)")
    print(f"  its summary: {summary}")

    if not args.skip_memory:
        big = DATA / f"cdrs-10000000-{DATA_VERSION}.csv"
        make_cdrs(big, 10_000_000)
        elapsed, peak_kib, _ = run_rate(big, deck, customers, DATA / "rated-10m.csv")
        print(f"memory: 10,000,000 calls in {elapsed:.1f}s, peak RSS {peak_kib / 1024:,.0f} MiB (target ≤ 1,536 MiB)")
        (DATA / "rated-10m.csv").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
