"""``cdrflow rate``: the rating engine over CDR files on disk, no broker, no database.

Rates against one rate sheet (the tariff ``offline``), customers from a ``customer,cli``
CSV (without one, every call belongs to customer ``-``), an optional schedule; writes
one output row per input row — rejected rows included, with their reason — in the header
``OUTPUT_HEADER``. Streams: memory stays flat however big the files are.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import BinaryIO
from zoneinfo import ZoneInfo

import polars as pl

from cdrflow.errors import InputError
from cdrflow.money import ZERO, from_micros
from services.parser.api import parse_file
from services.rater.clis import CliEntry, parse_cli
from services.rater.engine import rate_calls
from services.rater.plan import RETAIL, RatingPlan, SheetKey, Tariff
from services.rater.ratesheet import read_rate_sheet
from services.rater.schedule import UK_DEFAULT, Schedule

OUTPUT_HEADER = ("row", "cli", "dialled", "start", "duration", "customer", "code", "destination", "band",
                 "billable_seconds", "charge", "cost", "status", "reason")
OFFLINE_TARIFF = "offline"
ANYONE = "-"


@dataclass
class RateSummary:
    rows: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {"rated": 0, "unmatched": 0, "unrated": 0, "rejected": 0})
    charge: Decimal = ZERO
    cost: Decimal = ZERO

    def add(self, rated: pl.DataFrame, rejected: int) -> None:
        self.rows += rated.height + rejected
        for status, n in rated.group_by("status").len().iter_rows():
            self.counts[status] += n
        self.counts["rejected"] += rejected
        totals = rated.filter(pl.col("status") == "rated").select(pl.col("charge").sum(), pl.col("cost").sum())
        self.charge += from_micros(totals["charge"][0] or 0)
        self.cost += from_micros(totals["cost"][0] or 0)


def offline_plan(rates: Path, *, customers: Path | None, schedule: Path | None, direction: str, zone: ZoneInfo,
                 split_bands: bool, country_code: str = "44") -> RatingPlan:
    schedules = {}
    schedule_name = UK_DEFAULT.name
    if schedule is not None:
        schedule_name = "custom"
        schedules[schedule_name] = Schedule.from_rules(str(schedule), schedule.read_text(encoding="utf-8-sig"))
    # Without a customers file, one customer's empty DDI prefix claims every call.
    entries = _customers(customers, country_code) if customers else [CliEntry(ANYONE, "prefix", "")]
    tariff = Tariff(OFFLINE_TARIFF, schedule=schedule_name, split_bands=split_bands)
    return RatingPlan(zone=zone, tariffs={tariff.code: tariff}, customers={e.customer: OFFLINE_TARIFF for e in entries},
                      clis=entries, sheets={SheetKey(RETAIL, OFFLINE_TARIFF, direction): read_rate_sheet(rates)},
                      schedules=schedules, country_code=country_code)


def _customers(path: Path, country_code: str) -> list[CliEntry]:
    entries, problems = [], []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip().lower() for h in reader.fieldnames or []]
        if "customer" not in header or "cli" not in header:
            raise InputError(f"{path}: line 1: header must have customer,cli (found {','.join(header)})")
        reader.fieldnames = header
        for number, row in enumerate(reader, start=2):
            try:
                entries.append(parse_cli(row["customer"].strip(), row["cli"] or "", country_code=country_code))
            except InputError as exc:
                problems.append(f"line {number}: {exc}")
    if problems:
        raise InputError(f"{path}: " + "; ".join(problems[:20]))
    return entries


def _money_text(column: str) -> pl.Expr:
    """Micros as a decimal string: 4 places, or 6 where a carrier's cost needs them."""
    m = pl.col(column)
    four = (m // 1_000_000).cast(pl.String) + "." + ((m % 1_000_000) // 100).cast(pl.String).str.pad_start(4, "0")
    six = (m // 1_000_000).cast(pl.String) + "." + (m % 1_000_000).cast(pl.String).str.pad_start(6, "0")
    return pl.when(m % 100 == 0).then(four).otherwise(six).alias(column)


def _output(rated: pl.DataFrame, rejects: list, zone: ZoneInfo) -> pl.DataFrame:
    out = rated.select(
        "row", "cli", "dialled",
        pl.col("start").dt.convert_time_zone(zone.key).dt.strftime("%Y-%m-%dT%H:%M:%S%:z"),
        "duration", "customer", "code", "destination", "band", "billable_seconds",
        _money_text("charge"), _money_text("cost"), "status", "reason",
    ).cast({"row": pl.Int64, "duration": pl.Int64, "billable_seconds": pl.Int64})
    if not rejects:
        return out
    rejected = pl.DataFrame({"row": [r.row for r in rejects], "status": ["rejected"] * len(rejects),
                             "reason": [r.reason for r in rejects]}, schema={"row": pl.Int64, "status": pl.String,
                                                                           "reason": pl.String})
    return pl.concat([out, rejected], how="diagonal_relaxed").sort("row").select(OUTPUT_HEADER)


def rate_files(paths: Iterable[Path], fmt: str, plan: RatingPlan, *, direction: str, out: BinaryIO,
               batch_rows: int = 250_000, on_rows: Callable[[int], None] | None = None) -> RateSummary:
    """Rate every call of ``paths`` (in order) and write the output CSV to ``out``."""
    summary = RateSummary()
    out.write((",".join(OUTPUT_HEADER) + "\n").encode())
    for path in paths:
        for batch in parse_file(path, fmt, zone=plan.zone, batch_rows=batch_rows):
            rated = rate_calls(batch.records, plan, carrier=OFFLINE_TARIFF, direction=direction)
            summary.add(rated, len(batch.rejects))
            _output(rated, batch.rejects, plan.zone).write_csv(out, include_header=False)
            if on_rows:
                on_rows(rated.height + len(batch.rejects))
    return summary
