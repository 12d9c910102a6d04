"""The rating engine: prices a batch of normalised call records against a rating plan.

Pure: no Kafka, no database. The rater service and ``cdrflow rate`` both call
``rate_calls``. The rules, in the order applied to each call:

1. numbers normalised to E.164 digits; the call's direction is its own or the file's;
2. customer: the CLI (outbound) or the dialled DDI (inbound) matched to a customer's CLIs;
   the call's ``currency`` (of its charge) is that customer's, gathered with its tariff's terms;
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

Calls no customer claims are ``unmatched`` (currency null); calls with no rate are ``unrated``;
each with a reason. Money columns are integer micros: ``charge`` in ``currency``, ``cost`` and
``cdr_cost`` in the carrier's billing currency.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from cdrflow.callrecords import RATED_SCHEMA, conform
from cdrflow.numbers import normalise_expr
from services.rater.plan import WHOLESALE_TARIFF, RatingPlan
from services.rater.pricing import billable_seconds_expr, divisor, exact_price, round_expr, round_units
from services.rater.schedule import BANDS, MINUTES_PER_DAY, WEEK, Schedule

RATE_COLUMNS = ("code", "destination", "peak", "offpeak", "weekend", "peak_setup", "offpeak_setup",
                "weekend_setup", "minimum", "initial", "subsequent")
_DIVISORS = {places: divisor(places) for places in range(7)}
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)


def rate_calls(records: pl.DataFrame, plan: RatingPlan, *, carrier: str, direction: str) -> pl.DataFrame:
    """The records with the rated columns added (see RATED_SCHEMA); row order kept.

    Every step keeps the calls in their order, so lookups are joins that keep the left order
    or gathers by integer index (customer, rate row, band), never a join back on a call id."""
    calls = conform(records)
    cc = plan.country_code
    df = calls.with_columns(
        pl.col("direction").fill_null(direction),
        cli_n=normalise_expr(pl.col("cli"), cc),
        dialled_n=normalise_expr(pl.col("dialled"), cc),
        # wall-clock time in the operator's zone, as a naive datetime: bands and dates are read from it
        local=pl.col("start").dt.convert_time_zone(plan.zone.key).dt.replace_time_zone(None),
    ).with_columns(
        day=pl.col("local").dt.date(),
        week_minute=_week_minute(pl.col("local")),
        outbound=pl.col("direction") == "outbound",
        inbound=pl.col("direction") == "inbound",
    )
    match_key = df["cli_n"]
    if df["inbound"].any():
        match_key = df.select(pl.when(pl.col("inbound")).then("dialled_n").otherwise("cli_n"))["dialled_n"]
    who = plan.directory.match(match_key, df["account_code"], df["local"], carrier)
    # tariff terms and currency by customer index: one gather, null for calls no customer claims
    customer = plan.customer_table.select(pl.all().gather(who))
    sheets = plan.customer_sheets(carrier).select(pl.all().gather(who))
    w_out, w_in = plan.wholesale_sheet(carrier, "outbound"), plan.wholesale_sheet(carrier, "inbound")
    df = pl.concat([df, customer, sheets], how="horizontal").with_columns(
        match_key=match_key,
        carrier_sheet=_by_direction("carrier_sheet"),
        base_sheet=_by_direction("base_sheet"),
        wholesale_sheet=pl.when("outbound").then(pl.lit(w_out, pl.Int32)).when("inbound").then(pl.lit(w_in, pl.Int32)),
    )
    retail = _find_rates(plan, df, ("carrier_sheet", "base_sheet"))
    has_wholesale = w_out is not None or w_in is not None
    df = df.with_columns(_r=retail).with_columns(**_rate_columns(plan, pl.col("_r")))
    years = sorted(set(df["day"].dt.year().drop_nulls().to_list())) or [2000]
    df = df.with_columns(band_i=_band_index(plan, pl.col("schedule"), years))
    df = df.with_columns(
        chargeable=(pl.col("answered") & (pl.col("duration") > 0)) | pl.col("charge_unanswered").fill_null(False),
        rate=pl.lit(plan.rate_by_band).gather(plan.band_row(pl.col("band_i"), pl.col("_r"))),
        setup=pl.lit(plan.setup_by_band).gather(plan.band_row(pl.col("band_i"), pl.col("_r"))),
    ).with_columns(
        billable_seconds=pl.when(pl.col("chargeable") & pl.col("_r").is_not_null())
        .then(billable_seconds_expr(pl.col("duration"), pl.col("initial"), pl.col("subsequent"))).otherwise(0),
    ).with_columns(charge=_charge_expr(plan, pl.col("places"), pl.col("rounding"), uniform=_uniform_terms(plan)))
    if has_wholesale:
        df = df.with_columns(_rw=_find_rates(plan, df, ("wholesale_sheet",)),
                             band_w=_band_index(plan, pl.lit(plan.schedule_names.index(WHOLESALE_TARIFF.schedule),
                                                             pl.UInt32), years))
        df = df.with_columns(wholesale_cost=_wholesale_cost_expr(plan))
    else:
        df = df.with_columns(wholesale_cost=pl.lit(None, pl.Int64))
    df = _split_band_charges(df, plan)
    status = pl.when(pl.col("who").is_null()).then(pl.lit("unmatched")) \
        .when(pl.col("tariff").is_null() | pl.col("_r").is_null()).then(pl.lit("unrated")).otherwise(pl.lit("rated"))
    df = df.with_columns(who=who).with_columns(status=status).with_columns(
        rated=pl.col("status") == "rated",
        cost=pl.coalesce("cost", "wholesale_cost"),
        cdr_cost=pl.col("cost"),
        cli=pl.col("cli_n"), dialled=pl.col("dialled_n"),
    ).with_columns(
        charge=pl.when("rated").then("charge"),
        billable_seconds=pl.when("rated").then("billable_seconds"),
        band=pl.when("rated").then(pl.lit(pl.Series(BANDS, dtype=pl.String)).gather(pl.col("band_i"))),
    )
    df = df.with_columns(reason=_reasons(df))
    record_columns = [c for c in calls.columns if c not in RATED_SCHEMA]
    return df.select(*record_columns, *RATED_SCHEMA)


def _week_minute(local: pl.Expr) -> pl.Expr:
    """Minute of the week (Monday 00:00 = 0) of naive local datetimes, by integer arithmetic."""
    minutes = local.dt.epoch("s") // 60
    return ((minutes // MINUTES_PER_DAY + _EPOCH_WEEKDAY) % 7 * MINUTES_PER_DAY + minutes % MINUTES_PER_DAY) \
        .cast(pl.UInt32)


def _by_direction(column: str) -> pl.Expr:
    return pl.when("outbound").then(pl.col(f"{column}_outbound")).when("inbound").then(pl.col(f"{column}_inbound"))


def _find_rates(plan: RatingPlan, df: pl.DataFrame, sheet_columns: tuple[str, ...]) -> pl.Series:
    """For each call, the ``deck`` row (``_r``) of its rate, or null: on the first sheet (in
    ``sheet_columns`` order) that has one, the charge code if the sheet has it, else the longest
    dial prefix (rows not yet effective on the call's local day are skipped)."""
    n = df.height
    found = pl.repeat(None, n, dtype=pl.UInt32, eager=True).alias("_r")
    calls = df.select(pl.int_range(0, n, dtype=pl.UInt32).alias("_i"), "dialled_n", "charge_code", "day",
                      *sheet_columns)
    for sheet_column in sheet_columns:
        pending = calls.filter(pl.col(sheet_column).is_not_null() & pl.lit(found).is_null()) \
            .select("_i", "dialled_n", "charge_code", "day", sheet_id=sheet_column)

        def take(hits: pl.DataFrame) -> None:
            nonlocal pending, found
            if plan.has_versions:
                hits = hits.filter(pl.col("effective_from").is_null() | (pl.col("effective_from") <= pl.col("day"))) \
                    .sort("effective_from", nulls_last=False).unique("_i", keep="last")
            if hits.height:
                found = found.scatter(hits["_i"], hits["_r"])
                pending = pending.filter(pl.lit(found).gather(pl.col("_i")).is_null())

        if plan.deck.height and pending.height and pending["charge_code"].is_not_null().any():
            take(pending.filter(pl.col("charge_code").is_not_null())
                 .join(plan.deck.select("sheet_id", "code", "_r", "effective_from"),
                       left_on=["sheet_id", "charge_code"], right_on=["sheet_id", "code"], how="inner"))
        for length in plan.prefix_lengths:
            if not pending.height:
                break
            for sheet_id in pending["sheet_id"].unique().to_list():
                codes = plan.prefix_decks.get((sheet_id, length))
                if codes is None:
                    continue
                part = pending if pending["sheet_id"].n_unique() == 1 else pending.filter(pl.col("sheet_id") == sheet_id)
                take(part.with_columns(code=pl.col("dialled_n").str.slice(0, length))
                     .join(codes, on="code", how="inner"))
    return found


def _rate_columns(plan: RatingPlan, row: pl.Expr) -> dict[str, pl.Expr]:
    """The rate row's code, destination, minimum and increments, gathered by its index."""
    return {c: pl.lit(plan.deck[c]).gather(row)
            for c in ("code", "destination", "minimum", "initial", "subsequent")}


def _band_index(plan: RatingPlan, schedule: pl.Expr, years: list[int]) -> pl.Expr:
    """Index into BANDS of each call's band under ``schedule`` (index into ``plan.schedule_names``):
    one gather from the schedules' minute-of-week tables; public holidays are weekend."""
    band = pl.lit(plan.band_table).gather(schedule * WEEK + pl.col("week_minute"))
    for k, name in enumerate(plan.schedule_names):
        holidays = plan.schedules[name].holidays(years)
        if holidays:
            band = pl.when((schedule == k) & pl.col("day").is_in(sorted(holidays))) \
                .then(pl.lit(BANDS.index("weekend"), pl.UInt32)).otherwise(band)
    return band


def _uniform_terms(plan: RatingPlan) -> tuple[int, str] | None:
    """(places, rounding) when every tariff rounds alike, so rounding needs no per-call terms."""
    terms = {(t.places, t.rounding) for t in plan.tariffs.values()}
    terms |= {(4, "half-up")} if set(plan.customers.values()) - set(plan.tariffs) else set()
    return terms.pop() if len(terms) == 1 else None


def _charge_expr(plan: RatingPlan, places: pl.Expr, rounding: pl.Expr, uniform: tuple[int, str] | None) -> pl.Expr:
    """Charge in micros: max(minimum, set-up + rate × billable / 60) rounded once; null where no
    rate applies, 0 for calls that are not chargeable."""
    exact = pl.max_horizontal(60 * pl.col("minimum"), 60 * pl.col("setup") + pl.col("rate") * pl.col("billable_seconds"))
    if uniform is not None:
        d, mode = pl.lit(_DIVISORS[uniform[0]]), pl.lit(uniform[1])
    else:
        d, mode = places.replace_strict(_DIVISORS, return_dtype=pl.Int64), rounding
    return pl.when(pl.col("_r").is_null()).then(None) \
        .when(pl.col("chargeable")).then(round_expr(exact, d, mode)).otherwise(0)


def _wholesale_cost_expr(plan: RatingPlan) -> pl.Expr:
    """The carrier's cost from its wholesale sheet (UK schedule, 4 places half-up), as ``_charge_expr``."""
    r, band = pl.col("_rw"), pl.col("band_w")
    billable = billable_seconds_expr(pl.col("duration"), pl.lit(plan.deck["initial"]).gather(r),
                                     pl.lit(plan.deck["subsequent"]).gather(r))
    exact = pl.max_horizontal(60 * pl.lit(plan.deck["minimum"]).gather(r),
                              60 * pl.lit(plan.setup_by_band).gather(plan.band_row(band, r))
                              + pl.lit(plan.rate_by_band).gather(plan.band_row(band, r)) * billable)
    rounded = round_expr(exact, pl.lit(_DIVISORS[WHOLESALE_TARIFF.places]), pl.lit(WHOLESALE_TARIFF.rounding))
    return pl.when(r.is_null()).then(None).when(pl.col("answered") & (pl.col("duration") > 0)).then(rounded) \
        .otherwise(0)


def _reasons(df: pl.DataFrame) -> pl.Series:
    """Why each call that is not rated is not; null for rated calls. Built for those calls only."""
    reason = pl.repeat(None, df.height, dtype=pl.String, eager=True).alias("reason")
    # rechunked: polars 2.1's pl.format inside when/then can panic on columns of unequal chunks
    rest = df.select("rated", "who", "direction", "match_key", "tariff", "customer", "_r", "dialled_n") \
        .with_row_index("_i").filter(~pl.col("rated")).rechunk()
    if not rest.height:
        return reason
    why = rest.select("_i", reason=pl.when(pl.col("who").is_null()).then(
        pl.when(pl.col("direction") == "inbound").then(pl.format("no customer has DDI {}", "match_key"))
        .otherwise(pl.format("no customer has CLI {}", "match_key")))
        .when(pl.col("tariff").is_null()).then(pl.format("customer {} has no tariff", "customer"))
        .when(pl.col("_r").is_null()).then(
            pl.format("no rate for {} in tariff {} ({})", "dialled_n", "tariff", "direction")))
    return reason.scatter(why["_i"], why["reason"])


def _split_band_charges(df: pl.DataFrame, plan: RatingPlan) -> pl.DataFrame:
    """Re-price, part by part, the calls of split-band tariffs that cross a band boundary."""
    if not df["split_bands"].fill_null(False).any():
        return df
    candidates = df.with_row_index("_i").filter(
        pl.col("split_bands").fill_null(False) & pl.col("chargeable") & pl.col("_r").is_not_null()
        & _may_cross_a_boundary(plan))
    if not candidates.height:
        return df
    r = pl.col("_r")
    candidates = candidates.select(
        "_i", "start", "duration", "billable_seconds", "minimum", "places", "rounding",
        schedule=pl.lit(pl.Series(plan.schedule_names)).gather(pl.col("schedule")),
        **{band: pl.lit(plan.rate_by_band).gather(plan.band_row(pl.lit(k), r)) for k, band in enumerate(BANDS)},
        **{f"{band}_setup": pl.lit(plan.setup_by_band).gather(plan.band_row(pl.lit(k), r)) for k, band in enumerate(BANDS)},
    )
    fixes = []
    for row in candidates.iter_rows(named=True):
        schedule = plan.schedules[row["schedule"]]
        parts = band_seconds(schedule, row["start"], row["duration"], plan.zone)
        if len(parts) < 2:
            continue
        fixes.append((row["_i"], split_charge(row, parts)))
    if not fixes:
        return df
    index, charges = zip(*fixes)
    return df.with_columns(charge=df["charge"].scatter(list(index), list(charges)))


def _may_cross_a_boundary(plan: RatingPlan) -> pl.Expr:
    """True for calls that reach a band boundary of their schedule or span a clock change:
    only those are walked second by second. Minutes are counted on a continuous local
    timeline whose minute 0 (mod WEEK) is a Monday 00:00."""
    counts = [c for name in plan.schedule_names for c in plan.schedules[name].boundary_counts()]
    table = pl.lit(pl.Series(counts, dtype=pl.Int64))
    per_week = pl.lit(pl.Series([plan.schedules[n].boundary_counts()[WEEK] for n in plan.schedule_names],
                                dtype=pl.Int64))
    schedule = pl.col("schedule").cast(pl.Int64)

    def boundaries_up_to(local_minute: pl.Expr) -> pl.Expr:
        x = local_minute + _EPOCH_WEEKDAY * MINUTES_PER_DAY
        return (x // WEEK) * per_week.gather(schedule) + table.gather(schedule * (WEEK + 1) + x % WEEK)

    last = (pl.col("start") + pl.duration(seconds=pl.col("duration") - 1)) \
        .dt.convert_time_zone(plan.zone.key).dt.replace_time_zone(None)
    first_s, last_s = pl.col("local").dt.epoch("s"), last.dt.epoch("s")
    clock_changed = (last_s - first_s) != (pl.col("duration") - 1)
    crosses = boundaries_up_to(last_s // 60) > boundaries_up_to(first_s // 60)
    return (pl.col("duration") > 1) & (crosses | clock_changed)


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
