"""Phone numbers normalised to E.164 digits (no '+'), so CLIs on CDRs match CLIs on customers
and dialled numbers match rate-sheet prefixes. ``normalise_expr`` is the same rule on a
polars column, for the rating engine's batches."""

from __future__ import annotations

import polars as pl

_NOISE = r"[\s\-().]"


def normalise_number(raw: str, country_code: str = "44") -> str:
    """'+44 1632 960001', '00441632960001' and '01632 960001' all become '441632960001'.

    Anything that is not a phone number (an account or trunk code) comes back stripped
    but otherwise unchanged, so it can still match a customer's code exactly.
    """
    compact = "".join(ch for ch in raw.strip() if ch not in " -().\t")
    if compact.startswith("+"):
        digits = compact[1:]
    elif compact.startswith("00"):
        digits = compact[2:]
    elif compact.startswith("0"):
        digits = country_code + compact[1:]
    else:
        digits = compact
    return digits if digits.isdigit() else raw.strip()


def normalise_expr(column: pl.Expr, country_code: str = "44") -> pl.Expr:
    compact = column.str.replace_all(_NOISE, "")
    digits = (
        pl.when(compact.str.starts_with("+")).then(compact.str.slice(1))
        .when(compact.str.starts_with("00")).then(compact.str.slice(2))
        .when(compact.str.starts_with("0")).then(pl.lit(country_code) + compact.str.slice(1))
        .otherwise(compact)
    )
    return pl.when(digits.str.contains(r"^\d+$")).then(digits).otherwise(column.str.strip_chars())
