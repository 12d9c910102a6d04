"""``cdrflow rate``: the rating engine over CDR files on disk, no broker, no database.

Rates against one rate sheet (the tariff ``offline``), customers from a ``customer,cli``
CSV (without one, every call belongs to customer ``-``), an optional schedule; writes
one output row per input row — rejected rows included, with their reason — in the header
``OUTPUT_HEADER``. Streams: memory stays flat however big the files are. A cell a
spreadsheet could run as a formula is written with a quote in front (``cdrflow.csvsafe``).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from queue import Empty, Queue
from typing import BinaryIO, TypeVar
from zoneinfo import ZoneInfo

import polars as pl

from cdrflow.csvsafe import safe_frame
from cdrflow.errors import InputError
from cdrflow.money import ZERO, from_micros
from services.parser.api import ParsedBatch, parse_file
from services.rater.clis import cli_table
from services.rater.engine import rate_calls
from services.rater.plan import DEFAULT_CURRENCY, RETAIL, RatingPlan, SheetKey, Tariff
from services.rater.ratesheet import read_rate_sheet
from services.rater.schedule import UK_DEFAULT, Schedule

OUTPUT_HEADER = ("row", "cli", "dialled", "start", "duration", "customer", "code", "destination", "band",
                 "billable_seconds", "charge", "cost", "status", "reason")
START_FORMAT = "%Y-%m-%dT%H:%M:%S%:z"  # ISO 8601 with the offset, in the operator's zone
OFFLINE_TARIFF = "offline"
ANYONE = "*"
"""The customer of every call when no customers are given (not "-": a spreadsheet cell of its own)."""
T = TypeVar("T")


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
    clis = _customers(customers, country_code) if customers else pl.DataFrame(
        {"customer": [ANYONE], "kind": ["prefix"], "value": [""]}).with_columns(
        carrier=pl.lit(None, pl.String), effective_from=pl.lit(None, pl.Date), effective_to=pl.lit(None, pl.Date))
    tariff = Tariff(OFFLINE_TARIFF, schedule=schedule_name, split_bands=split_bands)
    codes = clis["customer"].unique().to_list()
    # A customers file names no currency: every customer's charges are in the default one.
    return RatingPlan(zone=zone, tariffs={tariff.code: tariff}, customers=dict.fromkeys(codes, OFFLINE_TARIFF),
                      clis=clis, sheets={SheetKey(RETAIL, OFFLINE_TARIFF, direction): read_rate_sheet(rates)},
                      schedules=schedules, country_code=country_code,
                      currencies=dict.fromkeys(codes, DEFAULT_CURRENCY))


def _customers(path: Path, country_code: str) -> pl.DataFrame:
    """The ``customer,cli`` rows of a customers file as a CLI table (see ``clis.cli_table``)."""
    try:
        raw = pl.read_csv(path, infer_schema=False, truncate_ragged_lines=True)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputError(f"{path}: not a readable CSV file: {str(exc).splitlines()[0]}") from exc
    header = {name: name.strip().lower() for name in raw.columns}
    if "customer" not in header.values() or "cli" not in header.values():
        raise InputError(f"{path}: line 1: header must have customer,cli (found {','.join(header.values())})")
    raw = raw.rename(header)
    try:
        return cli_table(raw["customer"].fill_null(""), raw["cli"], country_code)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc


def _money_text(micros: pl.Series) -> pl.Expr:
    """Micros as a decimal string: 4 places, or 6 where a carrier's cost needs them (the six-place
    form is built only for a batch that has such an amount)."""
    m = pl.col(micros.name)
    sign, size = pl.when(m < 0).then(pl.lit("-")).otherwise(pl.lit("")), m.abs()  # -0.01 is "-0.0100"
    units = sign + (size // 1_000_000).cast(pl.String) + "."
    four = units + ((size % 1_000_000) // 100).cast(pl.String).str.pad_start(4, "0")
    if not (micros % 100 != 0).any():
        return four.alias(micros.name)
    six = units + (size % 1_000_000).cast(pl.String).str.pad_start(6, "0")
    return pl.when(m % 100 == 0).then(four).otherwise(six).alias(micros.name)


def _output(rated: pl.DataFrame, rejects: list, zone: ZoneInfo) -> pl.DataFrame:
    out = rated.select(
        "row", "cli", "dialled",
        pl.col("start").dt.convert_time_zone(zone.key),  # written as START_FORMAT by the writer
        "duration", "customer", "code", "destination", "band", "billable_seconds",
        _money_text(rated["charge"]), _money_text(rated["cost"]), "status", "reason",
    ).cast({"row": pl.Int64, "duration": pl.Int64, "billable_seconds": pl.Int64})
    if not rejects:
        return out
    rejected = pl.DataFrame({"row": [r.row for r in rejects], "status": ["rejected"] * len(rejects),
                             "reason": [r.reason for r in rejects]}, schema={"row": pl.Int64, "status": pl.String,
                                                                           "reason": pl.String})
    return pl.concat([out, rejected], how="diagonal_relaxed").sort("row").select(OUTPUT_HEADER)


def rate_files(paths: Iterable[Path], fmt: str, plan: RatingPlan | Callable[[], RatingPlan], *, direction: str,
               out: BinaryIO, zone: ZoneInfo | None = None, batch_rows: int = 200_000,
               on_rows: Callable[[int], None] | None = None) -> RateSummary:
    """Rate every call of ``paths`` (in order) and write the output CSV to ``out``.

    Three stages overlap, each in its own thread, joined by queues of at most ``AHEAD``
    batches (so memory stays flat): the parser reads the next batch while this thread rates
    one and the writer writes the one before (polars releases the GIL while it works).
    ``plan`` may be a function that builds it (then ``zone`` is required): it is built in
    its own thread while the first batches are parsed, instead of before."""
    summary = RateSummary()
    out.write((",".join(OUTPUT_HEADER) + "\n").encode())
    if isinstance(plan, RatingPlan):
        zone, build = plan.zone, None
    elif zone is None:
        raise ValueError("rate_files needs the zone when the plan is built as it goes")
    else:
        build = plan

    def parsed() -> Iterator[ParsedBatch]:
        for path in paths:
            yield from parse_file(path, fmt, zone=zone, batch_rows=batch_rows)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cdrflow-plan") as pool, _Writer(out) as writer:
        pending = pool.submit(build) if build else None
        for batch in _ahead(parsed()):
            if pending is not None:
                plan, pending = pending.result(), None  # its errors are raised here
            assert isinstance(plan, RatingPlan)
            rated = rate_calls(batch.records, plan, carrier=OFFLINE_TARIFF, direction=direction)
            summary.add(rated, len(batch.rejects))
            writer.write(_output(rated, batch.rejects, zone))
            if on_rows:
                on_rows(rated.height + len(batch.rejects))
        if pending is not None:
            pending.result()  # no calls at all: the rate sheet is still checked
    return summary


AHEAD = 2
"""Batches a stage may run ahead of the next: enough to keep both cores busy, little memory."""
_DONE = object()


def _ahead(items: Iterator[T]) -> Iterator[T]:
    """``items``, produced in a background thread up to ``AHEAD`` ahead; its exceptions re-raised here."""
    queue: Queue = Queue(maxsize=AHEAD)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                queue.put((item, None))
            queue.put((_DONE, None))
        except BaseException as exc:  # handed to the consumer, raised there
            queue.put((_DONE, exc))

    thread = threading.Thread(target=produce, name="cdrflow-parse", daemon=True)
    thread.start()
    try:
        while True:
            item, error = queue.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                queue.get_nowait()
            except Empty:
                thread.join(0.05)


class _Writer:
    """Writes output frames to ``out`` in a background thread, in order, made safe for
    spreadsheets there (``safe_frame``); at most ``AHEAD`` waiting. Leaving the ``with``
    block waits for every frame to be written and re-raises a write error."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.queue: Queue = Queue(maxsize=AHEAD)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="cdrflow-write", daemon=True)

    def __enter__(self) -> _Writer:
        self.thread.start()
        return self

    def write(self, frame: pl.DataFrame) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(frame)

    def _run(self) -> None:
        while (frame := self.queue.get()) is not _DONE:
            if self.error is None:
                try:
                    safe_frame(frame).write_csv(self.out, include_header=False, datetime_format=START_FORMAT)
                except BaseException as exc:  # raised in the rating thread
                    self.error = exc

    def __exit__(self, *exc_info: object) -> None:
        self.queue.put(_DONE)
        self.thread.join()
        if self.error is not None and exc_info[0] is None:
            raise self.error
