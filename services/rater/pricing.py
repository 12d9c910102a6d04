"""The pricing rules, as pure integer arithmetic (exact; never float).

Units: rates, set-up charges and minimums are integer *micros* (millionths of the
currency unit; per minute for rates). A call's exact price before rounding is

    N = 60·setup + rate·billable_seconds        (in sixtieths of a micro)

so nothing is divided until the single rounding at the end: 180 s at 0.1/min is
exactly 0.3, with no per-increment drift. The same functions work on Python ints
and, element-wise, on polars integer expressions (``billable_seconds_expr``,
``round_expr``), so the scalar rules and the vectorised engine cannot disagree.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, ROUND_HALF_DOWN, ROUND_HALF_EVEN, ROUND_HALF_UP, ROUND_UP

import polars as pl

ROUNDING_MODES = {
    "half-up": ROUND_HALF_UP,
    "half-even": ROUND_HALF_EVEN,
    "half-down": ROUND_HALF_DOWN,
    "down": ROUND_DOWN,
    "up": ROUND_UP,
}
MICRO_PLACES = 6


def billable_seconds(duration: int, initial: int, subsequent: int) -> int:
    """Increments I/S: d ≤ I bills I; otherwise I + ceil((d − I)/S)·S. (A 0 s call is priced
    only when the tariff says unanswered calls are chargeable.)"""
    if duration <= initial:
        return initial
    return initial + -(-(duration - initial) // subsequent) * subsequent


def billable_seconds_expr(duration: pl.Expr, initial: pl.Expr, subsequent: pl.Expr) -> pl.Expr:
    over = duration - initial
    return pl.when(duration <= initial).then(initial).otherwise(initial + (-((-over) // subsequent)) * subsequent)


def exact_price(setup: int, rate_seconds: int, minimum: int) -> int:
    """max(minimum, setup + Σ per_minute × seconds / 60), in sixtieths of a micro (no rounding yet).

    ``rate_seconds`` is per-minute rate × billable seconds, summed over the call's parts
    (one part unless the tariff splits calls at band boundaries)."""
    return max(60 * minimum, 60 * setup + rate_seconds)


def divisor(places: int) -> int:
    """Sixtieths of a micro in one unit of the last kept decimal place."""
    if not 0 <= places <= MICRO_PLACES:
        raise ValueError(f"rounding places must be 0..{MICRO_PLACES}, not {places}")
    return 60 * 10 ** (MICRO_PLACES - places)


def round_units(n: int, places: int, mode: str) -> int:
    """Round a non-negative exact price ``n`` once to ``places`` decimals; returns micros."""
    d = divisor(places)
    q, r = divmod(n, d)
    if mode == "down":
        pass
    elif mode == "up":
        q += r > 0
    elif mode == "half-up":
        q += 2 * r >= d
    elif mode == "half-down":
        q += 2 * r > d
    elif mode == "half-even":
        q += 2 * r > d or (2 * r == d and q % 2 == 1)
    else:
        raise ValueError(f"unknown rounding mode {mode!r}: use one of {', '.join(ROUNDING_MODES)}")
    return q * (d // 60)


def round_expr(n: pl.Expr, d: pl.Expr, mode: pl.Expr) -> pl.Expr:
    """``round_units`` element-wise: n exact prices, d divisors, mode names. Returns micros."""
    q, r = n // d, n % d
    up = (
        pl.when(mode == "down").then(False)
        .when(mode == "up").then(r > 0)
        .when(mode == "half-up").then(2 * r >= d)
        .when(mode == "half-down").then(2 * r > d)
        .otherwise((2 * r > d) | ((2 * r == d) & (q % 2 == 1)))  # half-even
    )
    return (q + up.cast(pl.Int64)) * (d // 60)
