"""Which customer a call belongs to: CLIs as DDIs, DDI ranges, account codes and trunk codes.

A CLI entry may be limited to one carrier and to effective dates (from inclusive, to
exclusive). Precedence, most specific first: an exact DDI, an account or trunk code,
the longest matching DDI prefix, a from–to DDI range; within each, an entry limited to
the call's carrier beats a general one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

import polars as pl

from cdrflow.errors import InputError
from cdrflow.numbers import normalise_number

KINDS = ("ddi", "prefix", "range", "account", "trunk")
_RANGE = re.compile(r"^\s*(\+?[\d\s]+?)\s*-\s*(\+?[\d\s]+)\s*$")


@dataclass(frozen=True)
class CliEntry:
    customer: str
    kind: str  # ddi | prefix | range | account | trunk
    value: str  # normalised digits for ddi/prefix; "from-to" digits for range; the code as written otherwise
    carrier: str | None = None
    effective_from: date | None = None
    effective_to: date | None = None  # exclusive

    @property
    def bounds(self) -> tuple[int, int] | None:
        if self.kind != "range":
            return None
        low, high = self.value.split("-")
        return int(low), int(high)


def parse_cli(customer: str, text: str, kind: str | None = None, country_code: str = "44", **limits: object) -> CliEntry:
    """Read a CLI as an operator writes it: '+441632960001', '+4416329600*', '441632960000-441632960099',
    or an account/trunk code (give ``kind`` for those that look like numbers)."""
    text = text.strip()
    if not text:
        raise InputError(f"customer {customer}: CLI is empty")
    if kind is None:
        if _RANGE.match(text):
            kind = "range"
        elif text.endswith("*"):
            kind = "prefix"
        elif normalise_number(text, country_code).isdigit():
            kind = "ddi"
        else:
            kind = "account"
    if kind not in KINDS:
        raise InputError(f"customer {customer}: CLI kind {kind!r} is not one of {', '.join(KINDS)}")
    if kind == "range":
        match = _RANGE.match(text)
        if not match:
            raise InputError(f"customer {customer}: range {text!r} is not FROM-TO")
        low, high = (normalise_number(g, country_code) for g in match.groups())
        if len(low) != len(high) or int(low) > int(high):
            raise InputError(f"customer {customer}: range {text!r} must run from a lower to a higher number "
                             "of the same length")
        value = f"{low}-{high}"
    elif kind in ("ddi", "prefix"):
        value = normalise_number(text.rstrip("*"), country_code)
        if not value.isdigit():
            raise InputError(f"customer {customer}: {text!r} is not a phone number")
    else:
        value = text
    return CliEntry(customer, kind, value, **limits)  # type: ignore[arg-type]


_ENTRY_SCHEMA = {"customer": pl.String, "kind": pl.String, "value": pl.String, "carrier": pl.String,
                 "effective_from": pl.Date, "effective_to": pl.Date, "low": pl.Int64, "high": pl.Int64}


class CliDirectory:
    """Every customer's CLIs, compiled for matching a whole batch of calls at once."""

    def __init__(self, entries: list[CliEntry]) -> None:
        rows = [{"customer": e.customer, "kind": e.kind, "value": e.value, "carrier": e.carrier,
                 "effective_from": e.effective_from, "effective_to": e.effective_to,
                 "low": (e.bounds or (None, None))[0], "high": (e.bounds or (None, None))[1]} for e in entries]
        table = pl.DataFrame(rows, schema=_ENTRY_SCHEMA)
        self.size = table.height
        self._exact = table.filter(pl.col("kind") == "ddi")
        self._codes = table.filter(pl.col("kind").is_in(["account", "trunk"]))
        prefixes = table.filter(pl.col("kind") == "prefix").with_columns(length=pl.col("value").str.len_chars())
        self._prefix_lengths = sorted(set(prefixes["length"].to_list()), reverse=True)
        self._prefixes = prefixes
        self._ranges = table.filter(pl.col("kind") == "range").sort("low")

    def match(self, calls: pl.DataFrame, carrier: str) -> pl.DataFrame:
        """``calls`` has ``_i`` (unique), ``match_key`` (normalised number), ``account_code`` and
        ``start``; returns ``_i, customer`` for the calls some CLI claims."""
        base = calls.select("_i", "match_key", "account_code", pl.col("start").dt.date().alias("day"))
        found: list[pl.DataFrame] = []
        pending = base

        def take(hits: pl.DataFrame) -> None:
            nonlocal pending
            best = _best(hits, carrier)
            if best.height:
                found.append(best)
                pending = pending.join(best.select("_i"), on="_i", how="anti")

        if self._exact.height:
            take(pending.join(self._exact, left_on="match_key", right_on="value", how="inner"))
        if self._codes.height and pending.height:
            take(pending.filter(pl.col("account_code").is_not_null())
                 .join(self._codes, left_on="account_code", right_on="value", how="inner"))
        for length in self._prefix_lengths:
            if not pending.height:
                break
            take(pending.with_columns(key=pl.col("match_key").str.slice(0, length))
                 .join(self._prefixes.filter(pl.col("length") == length), left_on="key", right_on="value",
                       how="inner"))
        if self._ranges.height and pending.height:
            numeric = pending.with_columns(n=pl.col("match_key").cast(pl.Int64, strict=False)) \
                .filter(pl.col("n").is_not_null())
            # Ranges don't overlap (checked when they are saved): the nearest range starting at
            # or below the number is the only one that can hold it.
            take(numeric.sort("n").join_asof(self._ranges, left_on="n", right_on="low", strategy="backward")
                 .filter(pl.col("high").is_not_null() & (pl.col("n") <= pl.col("high"))))
        if not found:
            return pl.DataFrame(schema={"_i": pl.UInt32, "customer": pl.String})
        return pl.concat(found)


def _best(hits: pl.DataFrame, carrier: str) -> pl.DataFrame:
    """Of the entries that claim a call, drop those not in effect or for another carrier;
    prefer the carrier-specific one."""
    live = hits.filter(
        (pl.col("carrier").is_null() | (pl.col("carrier") == carrier))
        & (pl.col("effective_from").is_null() | (pl.col("effective_from") <= pl.col("day")))
        & (pl.col("effective_to").is_null() | (pl.col("day") < pl.col("effective_to")))
    )
    return live.sort(pl.col("carrier").is_null()).unique("_i", keep="first", maintain_order=False) \
        .select("_i", "customer")
