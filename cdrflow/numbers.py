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
    """``normalise_number`` on a column. Each way of writing a number is one anchored regex
    extract (the first that matches wins), which polars runs several times faster than a
    when/then chain over strings; the hypothesis test holds the two rules equal."""
    compact = column.str.replace_all(_NOISE, "")
    ways = [compact.str.extract(r"^(?:\+|00)(\d+)$")]  # international: '+' or '00', then digits
    if country_code.isdigit():  # national: '0' then digits (not '00') → country code + digits
        ways.append(pl.lit(country_code) + compact.str.extract(r"^0((?:[\d&&[^0]]\d*)?)$"))
    ways.append(compact.str.extract(r"^([\d&&[^0]]\d*)$"))  # already E.164 digits
    return pl.coalesce(*ways, column.str.strip_chars())  # not a number: left as written, stripped
