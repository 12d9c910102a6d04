"""Vectorised readers for field values: text in, typed column plus a reason column out.

Each reader takes a column of stripped strings (null = no value) and returns the typed
values and, per row, why the value can't be read (null where it can). A row whose value
can't be read is rejected by the engine with that reason; nothing here raises for bad data.

A value quoted in a reason is cut to ``SHOWN_VALUE_CHARS`` (a 50 MB field must not make a
50 MB reason); a text field longer than its maximum is found by its byte length first, which
polars knows without reading the text, so the check costs nothing on an ordinary batch.

Money is read without float: the digits are split by a regular expression and combined as
integers into micros (millionths), so "0.1" is exactly 100000.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

import polars as pl

from services.parser.definition import FieldSpec
from services.parser.limits import SHOWN_VALUE_CHARS

UTC_DT = pl.Datetime("us", "UTC")
ISO_NAIVE = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f",
             "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M")
ISO_AWARE = ("%Y-%m-%dT%H:%M:%S%#z", "%Y-%m-%d %H:%M:%S%#z", "%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z")
EPOCH_FORMATS = ("epoch", "epoch_ms")
DESCRIBE = {"iso": "an ISO 8601 date-time", "epoch": "a Unix time in seconds", "epoch_ms": "a Unix time in milliseconds"}
UNIT_MICROS = {"s": 1_000_000, "ms": 1_000, "cs": 10_000, "min": 60_000_000}


def reason(values: pl.Series, bad: pl.Series, label: str, problem: str) -> pl.Series:
    """``<label> '<value>' <problem>`` where ``bad``, else null."""
    if not bad.any():  # the usual case: skip building a column of nulls by expression
        return no_reason(len(values))
    frame = pl.DataFrame({"v": values, "b": bad})
    v = pl.col("v").fill_null("")
    shown = pl.when(v.str.len_chars() > SHOWN_VALUE_CHARS).then(v.str.slice(0, SHOWN_VALUE_CHARS) + "…").otherwise(v)
    return frame.select(
        pl.when(pl.col("b")).then(pl.concat_str([pl.lit(f"{label} '"), shown, pl.lit(f"' {problem}")]))
        .otherwise(pl.lit(None, pl.String))).to_series()


def too_long(values: pl.Series, limit: int, label: str, note: str = "") -> pl.Series:
    """``<label> '<start>…' is N characters long: at most <limit><note>`` where longer, else null."""
    n = len(values)
    maybe = values.str.len_bytes() > limit  # never fewer bytes than characters: only these can be too long
    if not maybe.any():
        return no_reason(n)
    chars = values.str.len_chars()
    idx = (maybe & (chars > limit)).fill_null(False).arg_true()
    if idx.len() == 0:
        return no_reason(n)
    shown = values.gather(idx).str.slice(0, SHOWN_VALUE_CHARS).to_list()
    texts = [f"{label} '{v}{'…' if length > SHOWN_VALUE_CHARS else ''}' is {length:,} characters long: "
             f"at most {limit}{note}" for v, length in zip(shown, chars.gather(idx).to_list(), strict=True)]
    return no_reason(n).scatter(idx, pl.Series(texts, dtype=pl.String))


def no_reason(n: int) -> pl.Series:
    return pl.repeat(None, n, dtype=pl.String, eager=True)


def first_reason(reasons: list[pl.Series], n: int) -> pl.Series:
    reasons = [r for r in reasons if r.null_count() < r.len()]
    if not reasons:
        return no_reason(n)
    if len(reasons) == 1:
        return reasons[0]
    return pl.DataFrame({str(i): r for i, r in enumerate(reasons)}).select(pl.coalesce(pl.all())).to_series()


# --- text --------------------------------------------------------------------------


def read_text(s: pl.Series, spec: FieldSpec) -> tuple[pl.Series, pl.Series]:
    value = s.replace("", None) if s.dtype == pl.String else s
    if spec.required:
        return value, pl.select(pl.when(value.is_null()).then(pl.lit(f"{spec.label()} is empty"))
                                .otherwise(pl.lit(None, pl.String))).to_series()
    return value, no_reason(len(s))


# --- times -------------------------------------------------------------------------


def read_times(s: pl.Series, spec: FieldSpec, zone: ZoneInfo) -> tuple[pl.Series, pl.Series]:
    """Times to UTC: each format is tried on the rows no earlier format could read (usually none)."""
    n = len(s)
    out = pl.Series([None] * n, dtype=UTC_DT)
    # A Unix time of 0 is no time: Cisco writes dateTimeConnect = 0 for a call that never connected.
    no_time = (s == "0").fill_null(False) & any(f in EPOCH_FORMATS for f in spec.formats)
    pending = s.is_not_null() & (s != "") & ~no_time
    gap = pl.Series([False] * n, dtype=pl.Boolean)
    for fmt in _expand(spec.formats):
        if not pending.any():
            break
        idx = pending.arg_true()
        sub = s.gather(idx)
        parsed, nonexistent = _parse(sub, fmt, zone)
        got = parsed.is_not_null()
        if got.any():
            out = out.scatter(idx.filter(got), parsed.filter(got))
            pending = pending.scatter(idx.filter(got), False)
        if nonexistent is not None and nonexistent.any():
            gap = gap.scatter(idx.filter(nonexistent), True)
            pending = pending.scatter(idx.filter(nonexistent), False)
    empty = s.is_null() | (s == "")
    what = " or ".join(DESCRIBE.get(f, f"a date-time like {f}") for f in spec.formats)
    why = first_reason([
        reason(s, pending, spec.label(), f"is not {what}"),
        reason(s, gap, spec.label(), f"does not exist in {zone.key} (the clocks went forward)"),
        pl.select(pl.when(empty & pl.lit(spec.required)).then(pl.lit(f"{spec.label()} is empty"))
                  .otherwise(pl.lit(None, pl.String))).to_series(),
        reason(s, no_time & spec.required, spec.label(), "is 0: no time given"),
    ], n)
    return out, why


def _expand(formats: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for fmt in formats:
        out.extend(ISO_NAIVE + ISO_AWARE + ("iso-z",) if fmt == "iso" else (fmt,))
    return out


def _parse(sub: pl.Series, fmt: str, zone: ZoneInfo) -> tuple[pl.Series, pl.Series | None]:
    """(UTC times or null, rows that name a local time the zone skips) for one format."""
    if fmt in EPOCH_FORMATS:
        ints = sub.str.to_integer(strict=False)
        ok = ints.is_not_null() & (ints >= 0) & (ints < 253_402_300_800 * (1000 if fmt == "epoch_ms" else 1))
        micros = ints * (1_000_000 if fmt == "epoch" else 1_000)
        return pl.select(pl.when(ok).then(micros).otherwise(None).cast(pl.Int64).cast(UTC_DT)).to_series(), None
    if fmt == "iso-z":  # "...Z": chrono's %#z does not take a Z
        naive = sub.str.strip_suffix("Z").str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", strict=False, time_unit="us")
        naive = pl.select(pl.when(sub.str.ends_with("Z")).then(naive).otherwise(None)).to_series()
        return naive.dt.replace_time_zone("UTC"), None
    aware = "%z" in fmt or "%#z" in fmt or "%:z" in fmt
    try:
        parsed = sub.str.to_datetime(fmt, strict=False, time_unit="us", time_zone="UTC" if aware else None)
    except pl.exceptions.PolarsError:
        return pl.Series([None] * len(sub), dtype=UTC_DT), None
    if aware:
        return parsed.dt.convert_time_zone("UTC"), None
    local = parsed.dt.replace_time_zone(zone.key, ambiguous="earliest", non_existent="null")
    nonexistent = local.is_null() & parsed.is_not_null()
    return local.dt.convert_time_zone("UTC"), nonexistent


# --- dates ------------------------------------------------------------------------


def read_dates(s: pl.Series, spec: FieldSpec) -> tuple[pl.Series, pl.Series]:
    formats = [("%Y-%m-%d" if f == "iso" else f) for f in spec.formats]
    out = pl.Series([None] * len(s), dtype=pl.Date)
    for fmt in formats:
        parsed = s.str.to_date(fmt, strict=False) if "%d" in fmt else _month(s, fmt)
        out = pl.select(pl.coalesce(out, parsed)).to_series()
    bad = s.is_not_null() & (s != "") & out.is_null()
    why = [reason(s, bad, spec.label(), f"is not a date like {' or '.join(formats)}")]
    if spec.required:
        why.append(pl.select(pl.when(s.is_null() | (s == "")).then(pl.lit(f"{spec.label()} is empty"))
                             .otherwise(pl.lit(None, pl.String))).to_series())
    return out, first_reason(why, len(s))


def _month(s: pl.Series, fmt: str) -> pl.Series:
    """A month without a day (``%m/%Y``, ``%b %Y``): its first day."""
    return pl.select(pl.concat_str([pl.lit("01 "), pl.lit(s)]).str.to_date(f"%d {fmt}", strict=False)).to_series()


# --- numbers ----------------------------------------------------------------------


def read_seconds(s: pl.Series, spec: FieldSpec) -> tuple[pl.Series, pl.Series]:
    """Whole seconds. In ms/cs units a part-second is rounded up (carriers bill started seconds)."""
    label = spec.label()
    parts = _decimal_parts(s)
    neg = parts.struct.field("sign") == "-"
    whole = parts.struct.field("int").replace("", "0").str.to_integer(strict=False)
    frac = parts.struct.field("frac")
    ok = whole.is_not_null() & (parts.struct.field("int").str.len_chars() <= 12)
    if spec.unit == "s":
        fraction = frac.fill_null("").str.strip_chars_end("0") != ""
        value = whole
        bad_int = ok & fraction
    else:
        scale = UNIT_MICROS[spec.unit]
        micros = whole * scale + _frac_micros(frac, 6) * scale // 1_000_000
        value = (micros + 999_999) // 1_000_000
        bad_int = pl.Series([False] * len(s), dtype=pl.Boolean)
    present = s.is_not_null() & (s != "")
    noun = {"s": "seconds", "ms": "milliseconds", "cs": "hundredths of a second", "min": "minutes"}[spec.unit]
    why = first_reason([
        reason(s, present & ok & neg & (value != 0), label, "is negative"),
        reason(s, present & (~ok | bad_int), label, f"is not a whole number of {noun}" if spec.unit == "s"
               else f"is not a number of {noun}"),
        pl.select(pl.when(~present).then(pl.lit(f"{label} is empty")).otherwise(pl.lit(None, pl.String))).to_series(),
    ], len(s))
    return value.cast(pl.Int64), why


def read_count(s: pl.Series, spec: FieldSpec) -> tuple[pl.Series, pl.Series]:
    value = s.str.to_integer(strict=False)
    bad = s.is_not_null() & (s != "") & value.is_null()
    return value.cast(pl.Int64), reason(s, bad, spec.label(), "is not a whole number")


PLAIN_AMOUNT = r"^\d{1,12}(?:\.\d{0,6})?$"
"""The usual amount: no sign, no currency, at most 12 digits and 6 decimal places."""


def read_money(s: pl.Series, spec: FieldSpec) -> tuple[pl.Series, pl.Series]:
    """Exact micros from a decimal string: sign, up to 12 integer digits, up to 6 significant decimals.

    Plain amounts (most of them) go through polars' decimal reader, which is exact (a 38-digit
    integer underneath, no float); every other value is read by ``_read_money_exactly``,
    which knows what is wrong with it."""
    n = len(s)
    present = s.is_not_null() & (s != "")
    plain = s.str.contains(PLAIN_AMOUNT).fill_null(False)
    kept = pl.select(pl.when(plain).then(s).otherwise(None)).to_series()
    value = (kept.str.to_decimal(scale=6) * 1_000_000).cast(pl.Int64)
    why = no_reason(n)
    other = present & ~plain
    if other.any():
        idx = other.arg_true()
        exact, reasons = _read_money_exactly(s.gather(idx), spec)
        value, why = value.scatter(idx, exact), why.scatter(idx, reasons)
    if spec.required and not present.all():
        empty = pl.select(pl.when(~present).then(pl.lit(f"{spec.label()} is empty")).otherwise(pl.lit(None, pl.String)))
        why = first_reason([why, empty.to_series()], n)
    return value, why


def _read_money_exactly(s: pl.Series, spec: FieldSpec) -> tuple[pl.Series, pl.Series]:
    label = spec.label()
    cleaned = s.str.replace(r"^([+-]?)[£$€]", "$1")  # a currency sign in front is tolerated
    parts = _decimal_parts(cleaned)
    ip, frac = parts.struct.field("int"), parts.struct.field("frac")
    neg = parts.struct.field("sign") == "-"
    trimmed = frac.fill_null("").str.strip_chars_end("0")
    shape_ok = ip.is_not_null() & ((ip != "") | (frac.fill_null("") != "")) & (ip.str.len_chars() <= 12)
    micros = ip.replace("", "0").str.to_integer(strict=False) * 1_000_000 + _frac_micros(trimmed, 6)
    micros = pl.select(pl.when(neg).then(-micros).otherwise(micros)).to_series()
    present = s.is_not_null() & (s != "")
    why = [
        reason(s, present & ~shape_ok, label, "is not a decimal amount"),
        reason(s, present & shape_ok & (trimmed.str.len_chars() > 6), label, "has more than 6 decimal places"),
    ]
    if not spec.negative:
        why.append(reason(s, present & shape_ok & neg & (micros != 0), label, "must be a non-negative amount"))
    if spec.required:
        why.append(pl.select(pl.when(~present).then(pl.lit(f"{label} is empty")).otherwise(pl.lit(None, pl.String))).to_series())
    value = pl.select(pl.when(present & shape_ok).then(micros).otherwise(None)).to_series()
    return value.cast(pl.Int64), first_reason(why, len(s))


def _decimal_parts(s: pl.Series) -> pl.Series:
    return s.str.extract_groups(r"^(?<sign>[+-]?)(?<int>\d*)(?:\.(?<frac>\d*))?$")


def _frac_micros(frac: pl.Series, places: int) -> pl.Series:
    """Decimal digits after the point → micros; digits beyond ``places`` are cut (callers check)."""
    return frac.fill_null("").str.slice(0, places).str.pad_end(places, "0").str.to_integer(strict=False).fill_null(0)


# --- flags and choices -------------------------------------------------------------


def read_flag(s: pl.Series, spec: FieldSpec, default: bool) -> tuple[pl.Series, pl.Series]:
    low = s.str.to_lowercase()
    truthy = low.is_in(list(spec.values))
    if spec.false_values:
        falsy = low.is_in(list(spec.false_values))
        present = s.is_not_null() & (s != "")
        value = pl.select(pl.when(truthy).then(True).when(falsy).then(False).otherwise(default)).to_series()
        bad = present & ~truthy & ~falsy
        choices = "/".join(spec.values[:3] + spec.false_values[:3])
        return value, reason(s, bad, spec.label(), f"is not one of {choices}")
    value = pl.select(pl.when(s.is_null() | (s == "")).then(default).otherwise(truthy)).to_series()
    return value, no_reason(len(s))


def read_direction(s: pl.Series, spec: FieldSpec) -> tuple[pl.Series, pl.Series]:
    low = s.str.to_lowercase()
    mapping = dict(spec.map) or {"outbound": "outbound", "inbound": "inbound"}
    value = low.replace_strict(mapping, default=None, return_dtype=pl.String)
    bad = s.is_not_null() & (s != "") & value.is_null()
    return value, reason(s, bad, spec.label(), f"is not a direction ({', '.join(sorted(mapping))})")
