"""Fixed-fee sheets: a tariff's CSV that turns a carrier transaction's charge into a retail price.

Columns (header names case-, space-, ``_`` and ``-``-insensitive; any order; docs/fixed-fees.md):

    event_type, reference, description, rule, price, markup, cost, per, effective_from

A row matches on the transaction's ``event_type`` (exact, case-insensitive), ``reference``
(exact, case-insensitive: a feature or product code, or a CLI) and ``description`` (a pattern,
``*`` standing for any text, case-insensitive); an empty cell or ``*`` matches anything, so a
row with none of them is the sheet's default. ``rule`` is ``fixed`` (``price`` per unit),
``markup`` (``markup`` percent on the carrier's cost) or ``passthrough`` (the carrier's cost).
``cost`` is our wholesale cost per unit, used only when the transaction carries no amount.
``per`` is ``month`` (a recurring price, scaled on pro-rata transactions) or ``once``.
Every problem is reported with its line number, and a sheet with any problem is refused whole.

Pricing rules, in the order ``price_transaction`` applies them:

1. Rows whose ``effective_from`` is after the transaction's date (its ``effective_date``, else
   its ``period_start``) do not apply; of rows with the same match, the latest date applies.
   An undated transaction is priced by undated rows only.
2. The most specific matching row wins: a ``reference`` beats a ``description`` beats an
   ``event_type`` beats the default; at equal rank, a row giving more of them wins, then the
   description pattern with more literal characters. Two rows still equal: unpriced (ambiguous).
3. Sign: a credit (negative amount; with no amount, negative quantity) is priced negative.
4. Fraction, for amounts from the sheet (the carrier's amount is already the part's): a pro-rata
   transaction on a ``per`` month row pays, for each calendar month its part period touches, the
   days covered over the days of that month. The part runs from the later of ``period_start``
   and ``effective_date`` to ``period_end`` (exclusive); without both ends it is unpriced.
   Otherwise (not pro-rata, or ``per`` once) the fraction is 1, whatever dates it carries.
5. Cost: the carrier's amount as given (all units, the part period); with no amount, the row's
   ``cost`` × |quantity| × fraction.
6. Price: fixed = ``price`` × |quantity| × fraction; markup = cost × (1 + ``markup``/100);
   passthrough = cost; signed by rule 3.
7. Rounded once per transaction, from the exact value, to the tariff's places and mode
   (default 4, half-up: half away from zero, so a credit mirrors its charge).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import polars as pl

from cdrflow.errors import InputError
from cdrflow.money import MoneyError, round_money, to_micros, to_money
from cdrflow.reference import ReferenceDataError, csv_columns
from services.parser.transactions import TRANSACTION_SCHEMA, transactions_to_rows
from services.rater.clis import parse_date
from services.rater.pricing import ROUNDING_MODES

FIXED, MARKUP, PASSTHROUGH = "fixed", "markup", "passthrough"
RULES = (FIXED, MARKUP, PASSTHROUGH)
MONTH, ONCE = "month", "once"
PRICED, UNPRICED = "priced", "unpriced"
MATCH_COLUMNS = ("event_type", "reference", "description")
COLUMNS = (*MATCH_COLUMNS, "rule", "price", "markup", "cost", "per", "effective_from")
ALIASES = {
    "eventtype": "event_type", "event": "event_type", "type": "event_type",
    "reference": "reference", "product": "reference", "productcode": "reference",
    "description": "description", "billingdescription": "description",
    "rule": "rule", "price": "price", "retailprice": "price",
    "markup": "markup", "markuppercent": "markup",
    "cost": "cost", "wholesalecost": "cost",
    "per": "per", "effectivefrom": "effective_from",
}
_AMOUNT = re.compile(r"^\d+(\.\d+)?$")


class FeeSheetError(ReferenceDataError):
    """A fixed-fee sheet has problems; nothing from it was loaded and the active sheet stays active."""


@dataclass(frozen=True)
class FeeRow:
    """One validated line. Match fields are case-folded, None for "any"; money exact."""

    line: int
    event_type: str | None
    reference: str | None
    description: str | None  # the pattern, ``*`` standing for any text
    rule: str  # fixed | markup | passthrough
    price: Decimal | None  # fixed: retail price per unit (per month when ``per`` is month)
    markup: Decimal | None  # markup: percent on the carrier's cost
    cost: Decimal | None  # wholesale cost per unit, for transactions that carry no amount
    per: str  # month | once
    effective_from: date | None
    pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @property
    def match(self) -> tuple[str | None, str | None, str | None]:
        return self.event_type, self.reference, self.description

    @property
    def specificity(self) -> tuple[bool, bool, bool, int, int]:
        """Rule 2, as a sort key: larger is more specific."""
        given = [m is not None for m in self.match]
        literal = len((self.description or "").replace("*", ""))
        return given[1], given[2], given[0], sum(given), literal


@dataclass(frozen=True)
class FeeSheet:
    name: str
    rows: tuple[FeeRow, ...]

    def __len__(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class PricedFee:
    """A carrier transaction priced by a fee sheet; amounts in pounds, exact. ``price`` is None
    when unpriced (``reason`` says why: it belongs in reconciliation, like an unrated call)."""

    row: int | None  # the transaction's line in its file
    status: str  # priced | unpriced
    price: Decimal | None
    cost: Decimal | None  # the carrier's cost (``cost_from``: carrier | sheet), None if unknown
    cost_from: str | None
    line: int | None = None  # the sheet line that priced it
    rule: str | None = None
    fraction: Fraction = Fraction(1)  # the part of a month charged (rule 4)
    reason: str | None = None

    @property
    def margin(self) -> Decimal | None:
        return None if self.price is None or self.cost is None else self.price - self.cost


# --- reading and validating -------------------------------------------------------------

def read_fee_sheet(source: Path | bytes, name: str | None = None) -> FeeSheet:
    name = name or (str(source) if isinstance(source, Path) else "fee sheet")
    content = source.read_bytes() if isinstance(source, Path) else source
    try:
        lines, raw = csv_columns(content, name, ())
    except ReferenceDataError as exc:
        raise FeeSheetError(name, exc.problems) from exc
    problems: list[str] = []
    columns: dict[str, list[str]] = {}
    for header, values in raw.items():
        canonical = ALIASES.get(re.sub(r"[\s_\-/]+", "", header))
        if canonical in columns:
            problems.append(f"line 1: columns {header!r} and another both mean {canonical}")
        elif canonical:
            columns[canonical] = values
    if "rule" not in columns:
        problems.append(f"line 1: header has no rule column (found: {', '.join(raw)})")
    elif not lines:
        problems.append("line 1: the sheet has no rows")
    if problems:
        raise FeeSheetError(name, problems)

    rows: list[FeeRow] = []
    first: dict[tuple[object, ...], int] = {}
    for i, line in enumerate(lines):
        cells = {c: columns[c][i] if c in columns else "" for c in COLUMNS}
        reasons: list[str] = []
        row = _row(line, cells, reasons)
        if row is not None:
            key = (*row.match, row.effective_from)
            if key in first:
                shown = " / ".join(m or "*" for m in row.match)
                reasons.append(f"duplicate match {shown} (event_type / reference / description; "
                               f"first on line {first[key]})")
            first.setdefault(key, line)
            rows.append(row)
        problems.extend(f"line {line}: {reason}" for reason in reasons)
    if problems:
        raise FeeSheetError(name, problems)
    return FeeSheet(name, tuple(rows))


def _row(line: int, cells: Mapping[str, str], reasons: list[str]) -> FeeRow | None:
    """One line's row, or None with its problems added to ``reasons``."""
    rule = cells["rule"].lower()
    if rule not in RULES:
        reasons.append(f"rule {cells['rule']!r} is not fixed, markup or passthrough")
    amounts = {c: _amount(c, cells[c], reasons) for c in ("price", "markup", "cost")}
    needs = {FIXED: "price", MARKUP: "markup", PASSTHROUGH: None}.get(rule)
    for column in ("price", "markup"):
        if rule in RULES and column == needs and not cells[column]:
            reasons.append(f"rule {rule} needs a {column}")
        elif rule in RULES and column != needs and cells[column]:
            reasons.append(f"rule {rule} takes no {column} (ambiguous: which rule is meant?)")
    per = cells["per"].lower() or MONTH
    effective_from = None
    if per not in (MONTH, ONCE):
        reasons.append(f"per {cells['per']!r} is not month or once")
    try:
        effective_from = parse_date("effective_from", cells["effective_from"])
    except InputError as exc:
        reasons.append(str(exc))
    if reasons:
        return None
    event_type, reference, description = (None if cells[c] in ("", "*") else cells[c].casefold() for c in MATCH_COLUMNS)
    pattern = None if description is None else \
        re.compile(".*".join(re.escape(part) for part in description.split("*")), re.DOTALL)
    return FeeRow(line, event_type, reference, description, rule, amounts["price"], amounts["markup"],
                  amounts["cost"], per, effective_from, pattern)


def _amount(column: str, text: str, reasons: list[str]) -> Decimal | None:
    """A plain decimal (no sign, exponent, separator or currency), exact, at most 6 places."""
    if not text:
        return None
    if text.startswith("-"):
        reasons.append(f"{column} {text} is negative (a credit is priced from the transaction's sign)")
    elif not _AMOUNT.match(text):
        reasons.append(f"{column} {text!r} is not an amount (digits and a decimal point, e.g. 12.50)")
    else:
        try:
            amount = to_money(text)
            to_micros(amount)
            return amount
        except MoneyError:
            reasons.append(f"{column} {text} has more than 6 decimal places")
    return None


# --- pricing -----------------------------------------------------------------------------

def price_transaction(sheet: FeeSheet, transaction: Mapping[str, Any] | Any, *,
                      places: int = 4, rounding: str = "half-up") -> PricedFee:
    """Price one carrier transaction (a ``CarrierTransaction``, or a dict as
    ``transactions_to_rows`` gives it: amount a Decimal) by the module's rules 1–7.
    ``places`` and ``rounding`` are the tariff's."""
    t = transaction if isinstance(transaction, Mapping) else \
        {c: getattr(transaction, c, None) for c in TRANSACTION_SCHEMA}
    amount: Decimal | None = t.get("amount")
    quantity = 1 if t.get("quantity") is None else int(t["quantity"])

    def unpriced(reason: str, row: FeeRow | None = None) -> PricedFee:
        return PricedFee(t.get("row"), UNPRICED, None, amount, None if amount is None else "carrier",
                         row.line if row else None, row.rule if row else None, reason=reason)

    found = find_row(sheet, t)
    if isinstance(found, str):
        return unpriced(found)
    fraction = Fraction(1)
    if t.get("pro_rata") and found.per == MONTH and (found.rule == FIXED or amount is None):
        # Only amounts from the sheet are scaled: the carrier's amount is already the part's.
        told = pro_rata_fraction(t.get("period_start"), t.get("effective_date"), t.get("period_end"))
        if isinstance(told, str):
            return unpriced(f"{told}: can't scale line {found.line}'s monthly amount", found)
        fraction = told
    sign = -1 if (amount < 0 if amount is not None else quantity < 0) else 1
    units = abs(quantity) * fraction * sign
    cost = None if amount is None and found.cost is None else \
        Fraction(amount) if amount is not None else Fraction(found.cost) * units
    if found.rule == FIXED:
        exact = Fraction(found.price) * units
    elif cost is None:
        return unpriced(f"the carrier gave no amount and line {found.line} has no cost to {found.rule} on", found)
    else:
        exact = cost if found.rule == PASSTHROUGH else cost * (1 + Fraction(found.markup) / 100)
    if amount is not None:
        shown_cost, cost_from = amount, "carrier"
    else:
        shown_cost, cost_from = (None, None) if cost is None else (round_once(cost, places, rounding), "sheet")
    return PricedFee(t.get("row"), PRICED, round_once(exact, places, rounding), shown_cost, cost_from,
                     found.line, found.rule, fraction)


def price_transactions(sheet: FeeSheet, transactions: pl.DataFrame | Iterable[Mapping[str, Any]], *,
                       places: int = 4, rounding: str = "half-up") -> list[PricedFee]:
    """Every transaction priced, in order; a DataFrame is the parser's (TRANSACTION_SCHEMA, micros)."""
    rows = transactions_to_rows(transactions) if isinstance(transactions, pl.DataFrame) else transactions
    return [price_transaction(sheet, t, places=places, rounding=rounding) for t in rows]


def find_row(sheet: FeeSheet, t: Mapping[str, Any]) -> FeeRow | str:
    """The row that prices ``t`` (rules 1 and 2), or why there is none."""
    event_type, reference, description = ((t.get(c) or "").strip().casefold() for c in MATCH_COLUMNS)
    day: date | None = t.get("effective_date") or t.get("period_start")
    current: dict[tuple[str | None, ...], FeeRow] = {}
    for row in sheet.rows:
        if (row.event_type not in (None, event_type) or row.reference not in (None, reference)
                or (row.pattern is not None and not row.pattern.fullmatch(description))):
            continue
        if row.effective_from is not None and (day is None or row.effective_from > day):
            continue
        held = current.get(row.match)
        if held is None or (held.effective_from or date.min) < (row.effective_from or date.min):
            current[row.match] = row
    if not current:
        on = f"on {day}" if day else "(it carries no date, so only rows without effective_from apply)"
        return (f"no row of fee sheet {sheet.name} matches event type {t.get('event_type')!r}, reference "
                f"{t.get('reference')!r}, description {t.get('description')!r} {on}: add a row or a * default row")
    best = sorted(current.values(), key=lambda r: r.specificity, reverse=True)
    if len(best) > 1 and best[0].specificity == best[1].specificity:
        return (f"lines {best[0].line} and {best[1].line} of fee sheet {sheet.name} match equally well "
                f"(ambiguous): make one of them more specific")
    return best[0]


def pro_rata_fraction(start: date | None, effective: date | None, end: date | None) -> Fraction | str:
    """Rule 4: Σ over calendar months of days covered / days in that month, or why it can't be told."""
    if start is None or end is None:
        return "pro-rata without period_start and period_end"
    first = max(start, effective) if effective else start
    if first >= end:
        return f"pro-rata part from {first} to {end} (end exclusive) is empty"
    fraction, day = Fraction(0), first
    while day < end:
        days_in_month = calendar.monthrange(day.year, day.month)[1]
        next_month = date(day.year + day.month // 12, day.month % 12 + 1, 1)
        fraction += Fraction((min(end, next_month) - day).days, days_in_month)
        day = next_month
    return fraction


def round_once(value: Fraction, places: int = 4, rounding: str = "half-up") -> Decimal:
    """An exact value rounded once, by ``rounding`` (the tariff's mode) on its magnitude.

    Decimal can't hold 17/31 exactly, so the magnitude is cut to a whole number of last places
    plus a stand-in for the rest (exactly ½, or less, or more), which every mode rounds the
    same way as the exact rest."""
    if rounding not in ROUNDING_MODES:
        raise ValueError(f"unknown rounding mode {rounding!r}: use one of {', '.join(ROUNDING_MODES)}")
    whole, rest = divmod(abs(value.numerator) * 10 ** places, value.denominator)
    twice, whole_unit = 2 * rest, value.denominator
    stand_in = "0" if rest == 0 else "0.5" if twice == whole_unit else "0.25" if twice < whole_unit else "0.75"
    magnitude = round_money((Decimal(whole) + Decimal(stand_in)).scaleb(-places), places, ROUNDING_MODES[rounding])
    return -magnitude if value < 0 and magnitude else magnitude
