"""Which customer a call belongs to: CLIs as DDIs, DDI ranges, account codes and trunk codes.

A CLI entry may be limited to one carrier and to effective dates (from inclusive, to
exclusive). Precedence, most specific first:

1. an exact DDI;
2. an account or trunk code;
3. the narrowest DDI prefix or range that holds the number: a prefix is as wide as the numbers
   of the call's length it holds (``4416329600*`` holds 100 twelve-digit numbers), a range
   ``FROM-TO`` is TO − FROM + 1 wide; of a prefix and a range as wide, the prefix;

within each, an entry limited to the call's carrier beats a general one. So a DDI or a narrower
range inside another customer's wider prefix or range is allowed (the operator is told, see
``nested_claims``), and takes its calls; two entries one call could match with neither more
specific (the same DDI, the same range, ranges that overlap without one holding the other)
are refused (``CliClaims``).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

import polars as pl

from cdrflow.errors import InputError
from cdrflow.numbers import normalise_expr, normalise_number

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


@dataclass(frozen=True)
class Claim:
    """A CLI a customer holds, as the conflict rule sees it: stored already (``line`` None) or
    claimed on ``line`` of the file being loaded."""

    entry: CliEntry
    line: int | None = None


class CliClaims:
    """The CLIs held, indexed for the one conflict rule: two CLIs clash when they are of the same
    kind and carrier (none is a carrier of its own), their values are equal (ranges: their spans
    overlap and neither holds the other: the same span, or a partial overlap) and their effective
    dates overlap, for then one call could match two customers with neither more specific. A
    range strictly inside another is not a clash: the narrower one wins.

    Built from every stored CLI once per load, then each new CLI is checked and added in turn, so
    a load of n CLIs costs a dictionary look-up per CLI, not a scan of the stored ones."""

    def __init__(self, held: Iterable[Claim] = ()) -> None:
        self._by_value: dict[tuple[str, str | None, str], list[Claim]] = {}
        # Ranges per carrier, sorted by their low end; ``_widest`` bounds how far below a span's
        # low end an overlapping range can start.
        self._ranges: dict[str | None, list[tuple[int, int, int, Claim]]] = {}
        self._widest: dict[str | None, int] = {}
        self._added = 0  # ties in ``_ranges`` keep the order claims were added in
        for claim in held:
            self.add(claim)

    def add(self, claim: Claim) -> None:
        entry, carrier = claim.entry, claim.entry.carrier or None
        if entry.kind == "range":
            low, high = entry.bounds  # type: ignore[misc]
            bisect.insort(self._ranges.setdefault(carrier, []), (low, self._added, high, claim))
            self._widest[carrier] = max(self._widest.get(carrier, 0), high - low)
        else:
            self._by_value.setdefault((entry.kind, carrier, entry.value), []).append(claim)
        self._added += 1

    def clashes(self, entry: CliEntry) -> list[Claim]:
        """The claims ``entry`` clashes with, in the order they were added (stored ones first)."""
        carrier = entry.carrier or None
        if entry.kind == "range":
            low, high = entry.bounds  # type: ignore[misc]
            spans = self._ranges.get(carrier, [])
            first = bisect.bisect_left(spans, (low - self._widest.get(carrier, 0),))
            last = bisect.bisect_right(spans, (high, float("inf")))
            found = sorted((span for span in spans[first:last] if span[2] >= low
                            and not _strictly_nested((low, high), (span[0], span[2]))), key=lambda span: span[1])
            candidates = [span[3] for span in found]
        else:
            candidates = self._by_value.get((entry.kind, carrier, entry.value), [])
        return [c for c in candidates if dates_overlap(c.entry, entry)]

    def check(self, entry: CliEntry, text: str) -> Claim | None:
        """None if ``entry`` is new; the claim it repeats if its customer holds it already (adding
        it again changes nothing). The first clash decides; one with another customer, or with
        another range of the same customer (the same span is a repeat), raises InputError naming
        the CLI it overlaps."""
        for other in self.clashes(entry):
            if other.entry.customer == entry.customer and other.entry.value == entry.value:
                return other
            where = f" on line {other.line}" if other.line is not None else ""
            raise InputError(f"CLI {text} overlaps {other.entry.kind} {other.entry.value} "
                             f"of customer {other.entry.customer}{where}")
        return None


def check_claims(entries: pl.DataFrame, stored: pl.DataFrame) -> tuple[pl.Series, int, list[tuple[int, str]]]:
    """A file's CLIs checked, in line order, against the stored ones and the file's earlier
    lines, by ``CliClaims.check``'s rule. ``entries``: ``line``, ``cli`` and ``ENTRY_SCHEMA``
    (as ``read_clis`` returns them); ``stored``: ``ENTRY_SCHEMA``, in the order added. Returns
    which entries are new (to store), how many are held already, and (line, problem) per clash.

    Only a CLI whose kind and value occur again (stored, or on another line) or a range can
    clash; the rest are new without a look. A CLI on one line that one stored CLI of the same
    customer holds, neither limited by carrier or dates, is held without a look. The others go
    through ``CliClaims`` one by one, beside the stored CLIs they could clash with."""
    unrestricted = pl.col("carrier").is_null() & pl.col("effective_from").is_null() & pl.col("effective_to").is_null()
    holders = stored.group_by("kind", "value").agg(_stored=pl.len(), _holder=pl.col("customer").first(),
                                                   _plain=unrestricted.all())
    marked = entries.with_columns(_n=pl.len().over("kind", "value")) \
        .join(holders, on=["kind", "value"], how="left", maintain_order="left") \
        .with_columns(_held=((pl.col("kind") != "range") & (pl.col("_n") == 1) & (pl.col("_stored") == 1)
                             & (pl.col("_holder") == pl.col("customer")) & pl.col("_plain") & unrestricted)
                      .fill_null(False)) \
        .with_columns(_look=((pl.col("kind") == "range") | (pl.col("_n") > 1) | pl.col("_stored").is_not_null())
                      & ~pl.col("_held"))
    new, held = ~(marked["_look"] | marked["_held"]), int(marked["_held"].sum())
    looked = marked.filter("_look")
    if not looked.height:
        return new, held, []
    keys = looked.select("kind", "value").unique().with_columns(_near=pl.lit(True))
    near = stored.join(keys, on=["kind", "value"], how="left", maintain_order="left") \
        .filter((pl.col("kind") == "range") | pl.col("_near").is_not_null()).drop("_near")
    claims = CliClaims(Claim(CliEntry(*row)) for row in near.iter_rows())
    problems, accepted = [], set()
    for line, text, *fields in looked.select("line", "cli", *ENTRY_SCHEMA).iter_rows():
        entry = CliEntry(*fields)
        try:
            repeated = claims.check(entry, text)
        except InputError as exc:
            problems.append((line, str(exc)))
            continue
        if repeated is None:
            claims.add(Claim(entry, line))
            accepted.add(line)
        else:
            held += 1
    return new | pl.Series([line in accepted for line in entries["line"]], dtype=pl.Boolean), held, problems


def _strictly_nested(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """One span (low, high; inclusive) holds the other and they differ."""
    return a != b and ((a[0] <= b[0] and b[1] <= a[1]) or (b[0] <= a[0] and a[1] <= b[1]))


def dates_overlap(a: CliEntry, b: CliEntry) -> bool:
    """Effective dates run from inclusive to exclusive; a missing one is open-ended."""
    a_from, a_to = a.effective_from or date.min, a.effective_to or date.max
    b_from, b_to = b.effective_from or date.min, b.effective_to or date.max
    return a_from < b_to and b_from < a_to


ENTRY_SCHEMA = {"customer": pl.String, "kind": pl.String, "value": pl.String, "carrier": pl.String,
                 "effective_from": pl.Date, "effective_to": pl.Date}
_PLAIN_NUMBER = r"^\+?[0-9]+\*?$"
"""CLIs written as plain digits ('+441632960001', '01632960001', '+4416329600*'): read by column
(``normalise_expr`` is ``normalise_number``); any other text goes through ``parse_cli``."""


def cli_table(customers: pl.Series, texts: pl.Series, country_code: str = "44", first_line: int = 2) -> pl.DataFrame:
    """A customers file's ``customer,cli`` columns read as ``parse_cli`` reads each row, as a
    table in ``ENTRY_SCHEMA`` for ``CliDirectory.from_table``. Plain DDIs and DDI prefixes
    (nearly every row of a big file) are read by column; InputError lists the bad rows by line."""
    df = pl.DataFrame({"customer": customers.str.strip_chars(), "text": texts.fill_null("").str.strip_chars()}) \
        .with_row_index("line", offset=first_line)
    plain = df.filter(pl.col("text").str.contains(_PLAIN_NUMBER) & (pl.col("customer") != "")).select(
        "line", "customer",
        kind=pl.when(pl.col("text").str.ends_with("*")).then(pl.lit("prefix")).otherwise(pl.lit("ddi")),
        value=normalise_expr(pl.col("text").str.strip_suffix("*"), country_code))
    rows, problems = [], []
    for line, customer, text in df.join(plain.select("line"), on="line", how="anti").iter_rows():
        try:
            e = parse_cli(customer, text, country_code=country_code)
        except InputError as exc:
            problems.append(f"line {line}: {exc}")
            continue
        rows.append((line, e.customer, e.kind, e.value))
    if problems:
        raise InputError("; ".join(problems[:20]) + (f"; … and {len(problems) - 20} more" if len(problems) > 20 else ""))
    rest = pl.DataFrame(rows, schema={"line": pl.UInt32, "customer": pl.String, "kind": pl.String, "value": pl.String},
                        orient="row")
    return pl.concat([plain, rest]).sort("line").drop("line").with_columns(
        carrier=pl.lit(None, pl.String), effective_from=pl.lit(None, pl.Date), effective_to=pl.lit(None, pl.Date))


_SPACED_NUMBER = r"^\+?[0-9 ]*[0-9][0-9 ]*\*?$"
"""A DDI or DDI prefix written with digits and spaces only ('+44 1632 960001', '01632960*'):
``parse_cli`` reads it as its digits with the spaces taken out, which a column can do."""


def read_clis(rows: pl.DataFrame, country_code: str = "44") -> tuple[pl.DataFrame, list[tuple[int, str]]]:
    """A customers file's CLIs, each row read as ``parse_cli`` reads it, for files of tens of
    thousands of rows: DDIs and DDI prefixes written as plain numbers (nearly every row) by
    column, the rest (ranges, codes, a ``kind`` given, effective dates) row by row.

    ``rows``: ``line`` (UInt32) and the text columns ``customer``, ``cli``, ``kind``,
    ``carrier``, ``effective_from``, ``effective_to`` ("" for none). Returns ``line``, ``cli``
    (as written) and ``ENTRY_SCHEMA``'s columns in line order, and (line, problem) for each row
    that is no CLI."""
    auto_kind = pl.when(pl.col("cli").str.ends_with("*")).then(pl.lit("prefix")).otherwise(pl.lit("ddi"))
    fast = (pl.col("cli").str.contains(_SPACED_NUMBER) & ((pl.col("kind") == "") | (pl.col("kind") == auto_kind))
            & (pl.col("effective_from") == "") & (pl.col("effective_to") == ""))
    rows = rows.with_columns(_fast=fast)
    plain = rows.filter("_fast").select(
        "line", "cli", "customer", kind=auto_kind,
        value=normalise_expr(pl.col("cli").str.replace_all(" ", "", literal=True).str.strip_suffix("*"), country_code),
        carrier=pl.when(pl.col("carrier") == "").then(None).otherwise(pl.col("carrier")),
        effective_from=pl.lit(None, pl.Date), effective_to=pl.lit(None, pl.Date))
    parsed, problems = [], []
    for line, customer, text, kind, carrier, from_text, to_text in rows.filter(~pl.col("_fast")).select(
            "line", "customer", "cli", "kind", "carrier", "effective_from", "effective_to").iter_rows():
        try:
            e = parse_cli(customer, text, kind or None, country_code, carrier=carrier or None,
                          effective_from=parse_date("effective_from", from_text),
                          effective_to=parse_date("effective_to", to_text))
        except InputError as exc:
            problems.append((line, str(exc)))
            continue
        parsed.append((line, text, e.customer, e.kind, e.value, e.carrier, e.effective_from, e.effective_to))
    schema = {"line": pl.UInt32, "cli": pl.String, **ENTRY_SCHEMA}
    return pl.concat([plain.cast(schema), pl.DataFrame(parsed, schema=schema, orient="row")]).sort("line"), problems


def parse_date(column: str, text: str | None) -> date | None:
    """An effective date as written (YYYY-MM-DD); none if blank."""
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InputError(f"{column} {text!r} is not a date YYYY-MM-DD") from None


class CliDirectory:
    """Every customer's CLIs, compiled for matching a whole batch of calls at once.

    ``customers`` lists each customer once; a match is an index into it (``UInt32``), so the
    engine gathers a customer's tariff by index instead of joining on names. DDIs claimed by
    one unrestricted entry (almost all of them) are found by one join; the other calls go
    through the precedence rules."""

    def __init__(self, entries: list[CliEntry]) -> None:
        columns = {name: [getattr(e, name) for e in entries] for name in ENTRY_SCHEMA}
        self._compile(pl.DataFrame(columns, schema=ENTRY_SCHEMA))

    @classmethod
    def from_table(cls, table: pl.DataFrame) -> CliDirectory:
        """From rows in ``ENTRY_SCHEMA`` (as ``cli_table`` reads them), without an object per CLI."""
        directory = cls.__new__(cls)
        directory._compile(table.select([pl.col(n).cast(t) for n, t in ENTRY_SCHEMA.items()]))
        return directory

    def _compile(self, table: pl.DataFrame) -> None:
        self.size = table.height
        self.customers = table["customer"].unique(maintain_order=True)
        index = pl.DataFrame({"customer": self.customers}).with_row_index("who")
        table = table.join(index, on="customer", how="left", maintain_order="left")
        ranges = table.filter(pl.col("kind") == "range").with_columns(
            pl.col("value").str.split_exact("-", 1).struct.field("field_0").cast(pl.Int64).alias("low"),
            pl.col("value").str.split_exact("-", 1).struct.field("field_1").cast(pl.Int64).alias("high"))
        exact = table.filter(pl.col("kind") == "ddi")
        unrestricted = pl.col("carrier").is_null() & pl.col("effective_from").is_null() & pl.col("effective_to").is_null()
        plain = (pl.len().over("value") == 1) & unrestricted
        self._plain = exact.filter(plain).select("value", "who")
        self._exact = exact.filter(~plain)
        self._codes = table.filter(pl.col("kind").is_in(["account", "trunk"]))
        prefixes = table.filter(pl.col("kind") == "prefix").with_columns(length=pl.col("value").str.len_chars())
        self._prefix_lengths = sorted(set(prefixes["length"].to_list()), reverse=True)
        self._prefixes = prefixes
        self._ranges = ranges.sort("low")

    def match(self, match_key: pl.Series, account_code: pl.Series, local_start: pl.Series, carrier: str) -> pl.Series:
        """For each call (``match_key``: its normalised number; ``local_start``: its start on the
        operator's wall clock, whose date the CLI's effective dates are compared with), the index
        in ``customers`` of the customer a CLI claims it for, or null; in call order."""
        who = match_key.to_frame("value").join(self._plain, on="value", how="left", maintain_order="left")["who"]
        pending = pl.DataFrame({"_i": pl.int_range(0, len(match_key), dtype=pl.UInt32, eager=True),
                                "match_key": match_key, "account_code": account_code, "day": local_start.dt.date()}) \
            .filter(who.is_null())
        found: list[pl.DataFrame] = []

        def take(hits: pl.DataFrame) -> None:
            nonlocal pending
            best = _best(hits, carrier)
            if best.height:
                found.append(best)
                pending = pending.join(best.select("_i"), on="_i", how="anti")

        if self._exact.height and pending.height:
            take(pending.join(self._exact, left_on="match_key", right_on="value", how="inner"))
        if self._codes.height and pending.height:
            take(pending.filter(pl.col("account_code").is_not_null())
                 .join(self._codes, left_on="account_code", right_on="value", how="inner"))
        if pending.height and (self._prefix_lengths or self._ranges.height):
            take(self._number_hits(pending))
        if found:
            hits = pl.concat(found)
            who = who.scatter(hits["_i"], hits["who"])
        return who


    def _number_hits(self, pending: pl.DataFrame) -> pl.DataFrame:
        """Every prefix and range that holds a pending call's number, with its ``width`` (how many
        numbers of the call's length it holds) and ``rank`` (prefix 0, range 1) for ``_best``.
        Prefixes and ranges may nest, so all that hold a number are found, not the nearest."""
        hits = []
        for length in self._prefix_lengths:
            hits.append(pending.with_columns(key=pl.col("match_key").str.slice(0, length))
                        .join(self._prefixes.filter(pl.col("length") == length), left_on="key", right_on="value",
                              how="inner")
                        .with_columns(width=pl.lit(10.0).pow(pl.col("match_key").str.len_chars() - length),
                                      rank=pl.lit(0))
                        .select(*_HIT_COLUMNS))
        if self._ranges.height:
            numeric = pending.with_columns(n=pl.col("match_key").cast(pl.Int64, strict=False)) \
                .filter(pl.col("n").is_not_null())
            hits.append(numeric.join_where(self._ranges, pl.col("n") >= pl.col("low"), pl.col("n") <= pl.col("high"))
                        .with_columns(width=(pl.col("high") - pl.col("low") + 1).cast(pl.Float64), rank=pl.lit(1))
                        .select(*_HIT_COLUMNS))
        return pl.concat(hits)


_HIT_COLUMNS = ("_i", "who", "carrier", "effective_from", "effective_to", "day", "width", "rank")


def _best(hits: pl.DataFrame, carrier: str) -> pl.DataFrame:
    """Of the entries that claim a call, drop those not in effect or for another carrier; of the
    rest, the narrowest (``width``, then ``rank``, where the hits have them), then the
    carrier-specific one."""
    live = hits.filter(
        (pl.col("carrier").is_null() | (pl.col("carrier") == carrier))
        & (pl.col("effective_from").is_null() | (pl.col("effective_from") <= pl.col("day")))
        & (pl.col("effective_to").is_null() | (pl.col("day") < pl.col("effective_to")))
    )
    order = [c for c in ("width", "rank") if c in live.columns] + [pl.col("carrier").is_null()]
    return live.sort(order, maintain_order=True).unique("_i", keep="first", maintain_order=False) \
        .select("_i", "who")
