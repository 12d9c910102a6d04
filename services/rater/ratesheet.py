"""Rate sheets: the CSV operators read and diff, validated and turned into integer columns.

Columns (header names case- and space-insensitive; Gamma-style names accepted):

    code, destination, peak, offpeak, weekend, peak_setup, offpeak_setup, weekend_setup,
    setup, minimum, increments, effective_from

``code`` is a dial prefix (digits) or a carrier charge code; rates are per minute,
set-up charges per call; a lone ``setup`` column sets all three bands; a missing
``offpeak``/``weekend`` rate is the ``peak`` rate; ``increments`` is ``I/S`` seconds
(default ``1/1``). Every problem is reported with its line number, and a sheet with
any problem is refused whole (the active sheet stays active).

Validation and conversion are vectorised (polars), so a 200,000-row deck loads in
well under a second.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from cdrflow.errors import InputError

MONEY_COLUMNS = ("peak", "offpeak", "weekend", "peak_setup", "offpeak_setup", "weekend_setup", "minimum")
ALIASES = {
    "code": "code", "chargecode": "code", "prefix": "code",
    "destination": "destination", "description": "destination",
    "peak": "peak", "peakperminute": "peak",
    "offpeak": "offpeak", "offpeakperminute": "offpeak",
    "weekend": "weekend", "weekendperminute": "weekend",
    "peaksetup": "peak_setup", "peakcallsetupcharge": "peak_setup",
    "offpeaksetup": "offpeak_setup", "offpeakcallsetupcharge": "offpeak_setup",
    "weekendsetup": "weekend_setup", "weekendcallsetupcharge": "weekend_setup",
    "setup": "setup", "connectioncharge": "setup",
    "minimum": "minimum", "minimumcharge": "minimum",
    "increments": "increments", "effectivefrom": "effective_from",
}
DECK_SCHEMA = {
    "code": pl.String, "destination": pl.String, "is_prefix": pl.Boolean,
    **{c: pl.Int64 for c in MONEY_COLUMNS},
    "initial": pl.Int64, "subsequent": pl.Int64, "effective_from": pl.Date, "line": pl.Int64,
}
_MONEY = r"^\d+(\.\d{1,6})?$"


class RateSheetError(InputError):
    """A rate sheet has problems; nothing from it was loaded and the active sheet stays active."""

    def __init__(self, name: str, problems: list[str]) -> None:
        self.name, self.problems = name, problems
        shown = "\n  ".join(problems[:50]) + (f"\n  … and {len(problems) - 50} more" if len(problems) > 50 else "")
        super().__init__(f"rate sheet {name}: {len(problems)} problem(s), sheet not loaded:\n  {shown}")


@dataclass(frozen=True)
class RateSheet:
    """A validated sheet: one row per (code, effective_from); money in integer micros."""

    name: str
    deck: pl.DataFrame  # DECK_SCHEMA

    def __len__(self) -> int:
        return self.deck.height


def canonical_header(name: str) -> str | None:
    return ALIASES.get(re.sub(r"[\s_\-/]+", "", name.strip().lower()))


def _micros(col: str) -> pl.Expr:
    """Exact decimal text → integer micros, without passing through float."""
    parts = pl.col(col).str.split_exact(".", 1)
    whole = parts.struct.field("field_0").cast(pl.Int64)
    frac = parts.struct.field("field_1").fill_null("").str.pad_end(6, "0").cast(pl.Int64)
    return whole * 1_000_000 + frac


def read_rate_sheet(source: Path | bytes, name: str | None = None) -> RateSheet:
    name = name or (str(source) if isinstance(source, Path) else "rate sheet")
    try:
        raw = pl.read_csv(source, infer_schema=False, has_header=True, truncate_ragged_lines=False)
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError, OSError) as exc:
        raise RateSheetError(name, [f"not a readable CSV file: {str(exc).splitlines()[0]}"]) from exc
    return validate(raw, name)


def validate(raw: pl.DataFrame, name: str) -> RateSheet:
    problems: list[str] = []
    renames: dict[str, str] = {}
    for column in raw.columns:
        canonical = canonical_header(column)
        if canonical is None:
            continue
        if canonical in renames.values():
            problems.append(f"line 1: columns {column!r} and another both mean {canonical}")
        renames[column] = canonical
    df = raw.select(list(renames)).rename(renames)
    for required in ("code", "peak"):
        if required not in df.columns:
            problems.append(f"line 1: header has no {required} column (found: {', '.join(raw.columns)})")
    if problems:
        raise RateSheetError(name, problems)

    df = df.with_columns(pl.all().str.strip_chars()).with_row_index("line", offset=2)
    given = [c for c in (*MONEY_COLUMNS, "setup") if c in df.columns]
    """Money columns the sheet has; derived ones (offpeak from peak, …) are checked at their source."""
    for band in ("offpeak", "weekend"):
        if band not in df.columns:
            df = df.with_columns(pl.col("peak").alias(band))
    for band in ("peak", "offpeak", "weekend"):
        if f"{band}_setup" not in df.columns:
            df = df.with_columns((pl.col("setup") if "setup" in df.columns else pl.lit("0")).alias(f"{band}_setup"))
    for optional, default in (("minimum", "0"), ("increments", "1/1"), ("destination", ""), ("effective_from", "")):
        if optional not in df.columns:
            df = df.with_columns(pl.lit(default).alias(optional))
    df = df.with_columns([pl.col(c).fill_null("" if c in ("destination", "effective_from") else "0")
                          for c in (*MONEY_COLUMNS, "destination", "effective_from")])
    df = df.with_columns(pl.col("increments").fill_null("1/1").replace("", "1/1"))

    checks: list[pl.Expr] = [
        pl.when(pl.col("code").is_null() | (pl.col("code") == "")).then(pl.lit("code is empty")),
    ]
    for c in given:
        checks.append(
            pl.when(pl.col(c).str.starts_with("-")).then(pl.format(f"{c} {{}} is negative", pl.col(c)))
            .when(~pl.col(c).str.contains(_MONEY)).then(
                pl.format(f"{c} {{}} is not an amount (digits, up to 6 decimal places)", pl.col(c))))
    inc = pl.col("increments").str.extract_groups(r"^(\d+)/(\d+)$")
    df = df.with_columns(initial=inc.struct.field("1").cast(pl.Int64, strict=False),
                         subsequent=inc.struct.field("2").cast(pl.Int64, strict=False),
                         eff=pl.col("effective_from").str.to_date("%Y-%m-%d", strict=False))
    checks.append(pl.when(pl.col("initial").is_null() | (pl.col("initial") < 1) | (pl.col("subsequent") < 1))
                  .then(pl.format("increments {} is not I/S with I and S whole seconds of at least 1",
                                  pl.col("increments"))))
    checks.append(pl.when((pl.col("effective_from") != "") & pl.col("eff").is_null())
                  .then(pl.format("effective_from {} is not a date YYYY-MM-DD", pl.col("effective_from"))))
    first_line = pl.col("line").min().over("code", "effective_from")
    checks.append(pl.when(pl.col("line") != first_line)
                  .then(pl.format("duplicate code {} (first on line {})", pl.col("code"), first_line)))

    found = df.select("line", pl.concat_list(checks).list.drop_nulls().alias("problems")) \
        .filter(pl.col("problems").list.len() > 0)
    for line, reasons in found.iter_rows():
        problems.extend(f"line {line}: {reason}" for reason in reasons)
    if problems:
        raise RateSheetError(name, problems)

    deck = df.select(
        "code", "destination",
        pl.col("code").str.contains(r"^\d+$").alias("is_prefix"),
        *[_micros(c).alias(c) for c in MONEY_COLUMNS],
        "initial", "subsequent", pl.col("eff").alias("effective_from"), "line",
    )
    return RateSheet(name, deck)
