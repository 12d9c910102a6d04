"""The rating engine: prices a batch of normalised call records against a rating plan.

Pure: no Kafka, no database. The rater service and ``cdrflow rate`` both call
``rate_calls``. The rules, in the order applied to each call:

1. numbers normalised to E.164 digits; the call's direction is its own or the file's;
2. customer: the CLI (outbound) or the dialled DDI (inbound) matched to a customer's CLIs;
3. destination: on the carrier's own sheet of the customer's tariff first, then on the
   tariff's sheet: the carrier's charge code if the sheet has it, else the longest
   matching dial prefix of the dialled number (rates not yet effective are skipped);
4. band from the start time in the operator's zone and the tariff's schedule;
5. billable seconds by the rate's increments; unanswered and 0 s calls cost 0 unless
   the tariff charges them;
6. charge = max(minimum, setup + per-minute × billable/60), rounded once by the
   tariff's places and mode; with ``split_bands``, a call crossing a band boundary is
   priced part by part (set-up from the band it started in);
7. cost: the carrier's own cost from the CDR, else its wholesale sheet; margin = charge − cost.

Calls no customer claims are ``unmatched``; calls with no rate are ``unrated``; each with a reason.
Money columns are integer micros.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from cdrflow.callrecords import conform
from cdrflow.numbers import normalise_expr
from services.rater.plan import RETAIL, WHOLESALE, WHOLESALE_TARIFF, RatingPlan
from services.rater.pricing import billable_seconds_expr, divisor, exact_price, round_expr, round_units
from services.rater.schedule import BANDS, Schedule

RATE_COLUMNS = ("code", "destination", "peak", "offpeak", "weekend", "peak_setup", "offpeak_setup",
                "weekend_setup", "minimum", "initial", "subsequent")
RATED_SCHEMA = {
    "customer": pl.String, "tariff": pl.String, "code": pl.String, "destination": pl.String, "band": pl.String,
    "billable_seconds": pl.Int64, "charge": pl.Int64, "cost": pl.Int64, "cdr_cost": pl.Int64,
    "status": pl.String, "reason": pl.String,
}
_DIVISORS = {places: divisor(places) for places in range(7)}


def rate_calls(records: pl.DataFrame, plan: RatingPlan, *, carrier: str, direction: str) -> pl.DataFrame:
    """The records with the rated columns added (see RATED_SCHEMA); row order kept."""
    cc = plan.country_code
    df = conform(records).with_row_index("_i").with_columns(
        pl.col("direction").fill_null(direction),
        cli_n=normalise_expr(pl.col("cli"), cc),
        dialled_n=normalise_expr(pl.col("dialled"), cc),
        day=pl.col("start").dt.convert_time_zone(plan.zone.key).dt.date(),
        local=pl.col("start").dt.convert_time_zone(plan.zone.key),
    ).with_columns(match_key=pl.when(pl.col("direction") == "inbound").then("dialled_n").otherwise("cli_n"))

    df = df.join(plan.directory.match(df, carrier), on="_i", how="left") \
        .join(plan.tariff_table, on="customer", how="left")
    df = _attach_sheets(df, plan, carrier)
    df = df.join(_find_rates(plan, df, ("carrier_sheet", "base_sheet")), on="_i", how="left")
    df = df.join(_find_rates(plan, df, ("wholesale_sheet",)).rename({c: f"{c}_w" for c in RATE_COLUMNS}),
                 on="_i", how="left")

    years = sorted(set(df["day"].dt.year().drop_nulls().to_list())) or [2000]
    df = df.with_columns(band=_band_expr(plan, pl.col("schedule"), years),
                         band_w=plan.schedules[WHOLESALE_TARIFF.schedule].band_expr(pl.col("local"), years))
    df = df.with_columns(
        chargeable=(pl.col("answered") & (pl.col("duration") > 0)) | pl.col("charge_unanswered").fill_null(False),
        chargeable_w=pl.col("answered") & (pl.col("duration") > 0),
    )
    df = df.with_columns(
        billable_seconds=pl.when(pl.col("chargeable") & pl.col("code").is_not_null())
        .then(billable_seconds_expr(pl.col("duration"), pl.col("initial"), pl.col("subsequent"))).otherwise(0),
        charge=_charge_expr("", pl.col("places"), pl.col("rounding")),
        wholesale_cost=_charge_expr("_w", pl.lit(WHOLESALE_TARIFF.places), pl.lit(WHOLESALE_TARIFF.rounding)),
    )
    df = _split_band_charges(df, plan)
    df = df.with_columns(
        status=pl.when(pl.col("customer").is_null()).then(pl.lit("unmatched"))
        .when(pl.col("tariff").is_null() | pl.col("code").is_null()).then(pl.lit("unrated"))
        .otherwise(pl.lit("rated")),
        reason=pl.when(pl.col("customer").is_null()).then(
            pl.when(pl.col("direction") == "inbound").then(pl.format("no customer has DDI {}", "match_key"))
            .otherwise(pl.format("no customer has CLI {}", "match_key")))
        .when(pl.col("tariff").is_null()).then(pl.format("customer {} has no tariff", "customer"))
        .when(pl.col("code").is_null()).then(
            pl.format("no rate for {} in tariff {} ({})", "dialled_n", "tariff", "direction")),
        cost=pl.coalesce("cost", "wholesale_cost"),
        cdr_cost=pl.col("cost"),
    ).with_columns(
        charge=pl.when(pl.col("status") == "rated").then("charge"),
        billable_seconds=pl.when(pl.col("status") == "rated").then("billable_seconds"),
        band=pl.when(pl.col("status") == "rated").then("band"),
        cli=pl.col("cli_n"), dialled=pl.col("dialled_n"),
    )
    record_columns = [c for c in conform(records).columns if c not in RATED_SCHEMA]
    return df.sort("_i").select(*record_columns, *RATED_SCHEMA)


def _attach_sheets(df: pl.DataFrame, plan: RatingPlan, carrier: str) -> pl.DataFrame:
    sheets = plan.sheet_table()
    retail = sheets.filter(pl.col("kind") == RETAIL)
    own = retail.filter(pl.col("carrier") == carrier).select(
        tariff="owner", direction="direction", carrier_sheet="sheet_id")
    base = retail.filter(pl.col("carrier") == "").select(tariff="owner", direction="direction", base_sheet="sheet_id")
    wholesale = sheets.filter((pl.col("kind") == WHOLESALE) & (pl.col("owner") == carrier)) \
        .select("direction", wholesale_sheet="sheet_id")
    return df.join(own, on=["tariff", "direction"], how="left") \
        .join(base, on=["tariff", "direction"], how="left") \
        .join(wholesale, on="direction", how="left")


def _find_rates(plan: RatingPlan, df: pl.DataFrame, sheet_columns: tuple[str, ...]) -> pl.DataFrame:
    """For each call, the rate row of the first sheet (in ``sheet_columns`` order) that has one:
    the charge code if the sheet has it, else the longest dial prefix."""
    found: list[pl.DataFrame] = []
    calls = df.select("_i", "dialled_n", "charge_code", "day", *sheet_columns)
    for sheet_column in sheet_columns:
        pending = calls.filter(pl.col(sheet_column).is_not_null()).select(
            "_i", "dialled_n", "charge_code", "day", sheet_id=sheet_column)
        if found:
            pending = pending.join(pl.concat(found).select("_i"), on="_i", how="anti")

        def take(hits: pl.DataFrame) -> None:
            nonlocal pending
            if plan.has_versions:
                hits = hits.filter(pl.col("effective_from").is_null() | (pl.col("effective_from") <= pl.col("day"))) \
                    .sort("effective_from", nulls_last=False).unique("_i", keep="last")
            hits = hits.select("_i", *RATE_COLUMNS)
            if hits.height:
                found.append(hits)
                pending = pending.join(hits.select("_i"), on="_i", how="anti")

        if plan.deck.height and pending.height:
            take(pending.filter(pl.col("charge_code").is_not_null())
                 .join(plan.deck, left_on=["sheet_id", "charge_code"], right_on=["sheet_id", "code"], how="inner")
                 .with_columns(code=pl.col("charge_code")))
        for length in plan.prefix_lengths:
            if not pending.height:
                break
            take(pending.with_columns(code=pl.col("dialled_n").str.slice(0, length))
                 .join(plan.prefix_decks[length], on=["sheet_id", "code"], how="inner"))
    if not found:
        return pl.DataFrame(schema={"_i": pl.UInt32, **{c: plan_dtype(c) for c in RATE_COLUMNS}})
    return pl.concat(found)


def plan_dtype(column: str) -> pl.DataType:
    return pl.String() if column in ("code", "destination") else pl.Int64()


def _band_expr(plan: RatingPlan, schedule: pl.Expr, years: list[int]) -> pl.Expr:
    names = list(plan.schedules)
    expr = pl.when(schedule == names[0]).then(plan.schedules[names[0]].band_expr(pl.col("local"), years))
    for name in names[1:]:
        expr = expr.when(schedule == name).then(plan.schedules[name].band_expr(pl.col("local"), years))
    return expr.otherwise(None)


def _by_band(column: str, suffix: str, band: pl.Expr) -> pl.Expr:
    """The peak/offpeak/weekend variant of ``column`` for the call's band."""
    names = {b: f"{b}{column}{suffix}" for b in BANDS}
    return pl.when(band == "peak").then(pl.col(names["peak"])) \
        .when(band == "offpeak").then(pl.col(names["offpeak"])).otherwise(pl.col(names["weekend"]))


def _charge_expr(suffix: str, places: pl.Expr, rounding: pl.Expr) -> pl.Expr:
    """Charge in micros from the rate columns ending in ``suffix``; null where no rate applies."""
    band = pl.col(f"band{suffix}")
    billable = billable_seconds_expr(pl.col("duration"), pl.col(f"initial{suffix}"), pl.col(f"subsequent{suffix}"))
    exact = pl.max_horizontal(60 * pl.col(f"minimum{suffix}"),
                              60 * _by_band("_setup", suffix, band) + _by_band("", suffix, band) * billable)
    d = places.replace_strict(_DIVISORS, return_dtype=pl.Int64)
    chargeable = pl.col(f"chargeable{suffix}")
    return pl.when(pl.col(f"code{suffix}").is_null()).then(None) \
        .when(chargeable).then(round_expr(exact, d, rounding)).otherwise(0)


def _split_band_charges(df: pl.DataFrame, plan: RatingPlan) -> pl.DataFrame:
    """Re-price, part by part, the calls of split-band tariffs that cross a band boundary."""
    if not df["split_bands"].fill_null(False).any():
        return df
    candidates = df.filter(pl.col("split_bands").fill_null(False) & pl.col("chargeable") & pl.col("code").is_not_null())
    if not candidates.height:
        return df
    fixes = []
    for row in candidates.iter_rows(named=True):
        schedule = plan.schedules[row["schedule"]]
        parts = band_seconds(schedule, row["start"], row["duration"], plan.zone)
        if len(parts) < 2:
            continue
        fixes.append({"_i": row["_i"], "split_charge": split_charge(row, parts)})
    if not fixes:
        return df
    fix = pl.DataFrame(fixes, schema={"_i": pl.UInt32, "split_charge": pl.Int64})
    return df.join(fix, on="_i", how="left").with_columns(charge=pl.coalesce("split_charge", "charge")) \
        .drop("split_charge")


def band_seconds(schedule: Schedule, start: datetime, duration: int, zone) -> list[tuple[str, int]]:  # type: ignore[no-untyped-def]
    """The call's seconds per band, in time order: [(band, seconds), …]. Band boundaries
    are local minute boundaries, which are also UTC minute boundaries, so the call is
    walked minute by minute in UTC (correct across daylight-saving changes)."""
    parts: list[tuple[str, int]] = []
    t = start.astimezone(UTC)
    left = duration
    while left > 0:
        next_minute = (t + timedelta(minutes=1)).replace(second=0, microsecond=0)
        step = min(left, int((next_minute - t).total_seconds()) or 60)
        band = schedule.band_at(t.astimezone(zone))
        if parts and parts[-1][0] == band:
            parts[-1] = (band, parts[-1][1] + step)
        else:
            parts.append((band, step))
        t += timedelta(seconds=step)
        left -= step
    return parts


def split_charge(row: dict, parts: list[tuple[str, int]]) -> int:
    """Price a call part by part: each band's seconds at its rate, the rounding-up of the
    increments in the last band, set-up from the first band; then minimum, then one rounding."""
    extra = row["billable_seconds"] - sum(seconds for _, seconds in parts)
    *body, (last_band, last_seconds) = parts
    parts = [*body, (last_band, last_seconds + extra)]
    rate_seconds = sum(row[band] * seconds for band, seconds in parts)
    exact = exact_price(row[f"{parts[0][0]}_setup"], rate_seconds, row["minimum"])
    return round_units(exact, row["places"], row["rounding"])
