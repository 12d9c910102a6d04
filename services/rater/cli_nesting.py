"""CLIs that lie inside another customer's wider CLI: allowed, and the operator is told.

A DDI inside another customer's DDI prefix or range, a prefix inside a shorter prefix, a range
inside a wider range or inside a prefix: one call's number is held by both, and the most
specific wins (``services.rater.clis``: precedence). That is how an operator carves one
customer's numbers out of another's block, and also how a typing mistake quietly moves calls
from one customer to another, so each such pair is named when the narrower or the wider entry
is added (``cdrflow clis add``, ``customers add``, ``customers load``, ``POST /customers/…``).

Only pairs that can compete for a call are named: different customers (a customer's own
nested CLIs change nothing), carriers that can meet (the same, or one of them for every
carrier) and effective dates that overlap. Ranges that overlap without one holding the other
are refused, not noted (``CliClaims``). Pairs are found with column joins, so a load of tens
of thousands of CLIs costs a few joins, not a look per CLI.
"""

from __future__ import annotations

import polars as pl

from services.rater.clis import ENTRY_SCHEMA

_SIDE = ("_k", "line", "cli", *ENTRY_SCHEMA)
_PAIR = [f"{c}_n" for c in _SIDE] + [f"{c}_w" for c in _SIDE]


def nested_claims(new: pl.DataFrame, held: pl.DataFrame) -> list[tuple[int | None, str]]:
    """(line of the new entry, warning) for each new CLI inside another customer's wider CLI,
    or holding another customer's narrower one, in line order.

    ``new``: ``line`` (None for a single CLI added by hand), ``cli`` (as written) and
    ``ENTRY_SCHEMA``: the CLIs about to be stored. ``held``: ``ENTRY_SCHEMA``, the CLIs stored
    already. A pair of two new lines is named once, on the narrower one's line."""
    new = _numbers(new.select("line", "cli", *ENTRY_SCHEMA), offset=0)
    if not new.height:
        return []
    held = _numbers(held.select(*ENTRY_SCHEMA).with_columns(line=pl.lit(None, pl.UInt32), cli=pl.lit(None, pl.String))
                    .select("line", "cli", *ENTRY_SCHEMA), offset=new.height)
    everyone = pl.concat([new, held])
    pairs = pl.concat([_nested(new, everyone), _nested(held, new)])
    first, last = pl.date(1, 1, 1), pl.date(9999, 12, 31)
    pairs = pairs.filter(
        (pl.col("customer_n") != pl.col("customer_w"))
        & (pl.col("carrier_n").is_null() | pl.col("carrier_w").is_null() | (pl.col("carrier_n") == pl.col("carrier_w")))
        & (pl.col("effective_from_n").fill_null(first) < pl.col("effective_to_w").fill_null(last))
        & (pl.col("effective_from_w").fill_null(first) < pl.col("effective_to_n").fill_null(last))
    ).unique(["_k_n", "_k_w"], maintain_order=True)
    out = []
    for row in pairs.iter_rows(named=True):
        narrow, wide = ({k[:-2]: v for k, v in row.items() if k.endswith(side)} for side in ("_n", "_w"))
        if narrow["_k"] < new.height:  # the narrower entry is new: it takes calls from the wider one
            out.append((narrow["line"], f"CLI {narrow['cli']} lies inside {_named(wide)}: its calls go to "
                                        f"customer {narrow['customer']} (the most specific CLI wins)"))
        else:
            out.append((wide["line"], f"CLI {wide['cli']} holds {_named(narrow)}: calls to that one stay with "
                                      f"customer {narrow['customer']} (the most specific CLI wins)"))
    return sorted(out, key=lambda item: (item[0] is not None, item[0] or 0))


def _named(entry: dict) -> str:  # type: ignore[type-arg]
    line = f" on line {entry['line']}" if entry["line"] is not None else ""
    return f"{entry['kind']} {entry['value']} of customer {entry['customer']}{line}"


def _numbers(entries: pl.DataFrame, offset: int) -> pl.DataFrame:
    """The number entries (DDI, prefix, range) with a key ``_k`` and, for ranges, their bounds
    and the length of their numbers."""
    numbers = entries.filter(pl.col("kind").is_in(["ddi", "prefix", "range"])).with_columns(
        pl.col("line").cast(pl.UInt32), pl.col("cli").cast(pl.String))
    bounds = pl.col("value").str.split_exact("-", 1)
    return numbers.with_columns(pl.int_range(offset, offset + pl.len(), dtype=pl.Int64).alias("_k")) \
        .select(*_SIDE).with_columns(
            low=pl.when(pl.col("kind") == "range").then(bounds.struct.field("field_0"))
                  .otherwise(pl.col("value")),
            high=pl.when(pl.col("kind") == "range").then(bounds.struct.field("field_1"))
                   .otherwise(pl.col("value")))


def _nested(narrow: pl.DataFrame, wide: pl.DataFrame) -> pl.DataFrame:
    """Pairs (narrow entry ``_n``, wide entry ``_w``) where the wide one holds every number the
    narrow one does and more: a DDI or range (numbers ``low``..``high``, as text of one length)
    inside a prefix or a wider range, a prefix inside a shorter prefix."""
    n = narrow.rename({c: f"{c}_n" for c in narrow.columns})
    w = wide.rename({c: f"{c}_w" for c in wide.columns})
    found = []
    prefixes = w.filter(pl.col("kind_w") == "prefix")
    for length in sorted(set(prefixes["value_w"].str.len_chars().to_list())):
        of_length = prefixes.filter(pl.col("value_w").str.len_chars() == length)
        # A DDI or a range inside the prefix: both its ends start with it, and are longer.
        spans = n.filter(pl.col("kind_n").is_in(["ddi", "range"]) & (pl.col("low_n").str.len_chars() > length)
                         & (pl.col("low_n").str.slice(0, length) == pl.col("high_n").str.slice(0, length)))
        found.append(spans.with_columns(key=pl.col("low_n").str.slice(0, length))
                     .join(of_length, left_on="key", right_on="value_w", how="inner", coalesce=False))
        longer = n.filter((pl.col("kind_n") == "prefix") & (pl.col("value_n").str.len_chars() > length))
        found.append(longer.with_columns(key=pl.col("value_n").str.slice(0, length))
                     .join(of_length, left_on="key", right_on="value_w", how="inner", coalesce=False))
    ranges = w.filter(pl.col("kind_w") == "range").with_columns(
        width_w=pl.col("low_w").str.len_chars(), lo_w=pl.col("low_w").cast(pl.Int64),
        hi_w=pl.col("high_w").cast(pl.Int64))
    if ranges.height:
        # Inside a range: a DDI or range of the same length, or a prefix whose numbers of the
        # range's length all lie in it.
        spans = [n.filter(pl.col("kind_n").is_in(["ddi", "range"]))
                 .with_columns(width_n=pl.col("low_n").str.len_chars())]
        for width in sorted(set(ranges["width_w"].to_list())):
            spans.append(n.filter((pl.col("kind_n") == "prefix") & (pl.col("value_n").str.len_chars() < width))
                         .with_columns(low_n=pl.col("value_n").str.pad_end(width, "0"),
                                       high_n=pl.col("value_n").str.pad_end(width, "9"),
                                       width_n=pl.lit(width, pl.UInt32)))
        numbered = pl.concat(spans).with_columns(lo_n=pl.col("low_n").cast(pl.Int64, strict=False),
                                                 hi_n=pl.col("high_n").cast(pl.Int64, strict=False)) \
            .filter(pl.col("lo_n").is_not_null() & pl.col("hi_n").is_not_null())
        found.append(numbered.join_where(
            ranges, pl.col("lo_w") <= pl.col("lo_n"), pl.col("hi_n") <= pl.col("hi_w"))
            .filter((pl.col("width_n") == pl.col("width_w"))
                    & ((pl.col("lo_n") != pl.col("lo_w")) | (pl.col("hi_n") != pl.col("hi_w")))))
    columns = [f.select(_PAIR) for f in found]
    if not columns:
        schema = n.schema | w.schema
        return pl.DataFrame(schema={c: schema[c] for c in _PAIR})
    return pl.concat(columns)
