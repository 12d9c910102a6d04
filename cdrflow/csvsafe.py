"""CSV cells a spreadsheet cannot run: the guard on every CSV the product writes for people.

A spreadsheet reads a cell that starts with ``=``, ``+``, ``-`` or ``@`` as a formula, and
one starting with a tab or carriage return may be too. A carrier's file (a CLI, a charge
code, a description) could put ``=HYPERLINK("http://evil","x")`` into our output and have
it run on an operator's or customer's machine. The rule, after OWASP's "CSV Injection":

1. A cell whose first character is one of ``=`` ``+`` ``-`` ``@`` tab carriage-return
   gets a single quote ``'`` in front of it, so the spreadsheet shows it as text.
2. Except a cell that is entirely a decimal number: an optional ``+`` or ``-``, one or
   more ASCII digits, and optionally ``.`` followed by one or more ASCII digits
   (``-12.3400``, ``-5``, ``+441234567890``). It is left as it is, so a credit stays a
   number in the spreadsheet; a number is harmless. Anything more (``-5 ``, ``+44 20``,
   ``-1e3``, ``-.5``, ``-5.``, ``-5\\n=1``, a lone ``-``) is not a number and gets the quote.
3. Every other cell, the empty cell included, is left as it is.

The quote is part of the cell's text, so it survives the CSV quoting of the cell. Files
that are not for people (a COPY into the database) must not use this: it changes data.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from typing import Any, TextIO

import polars as pl

_UNSAFE = r"""(?x)
    ^(?: [=@\t\r]                                # always a formula
       | [+-] (?: $ | [^0-9]                     # a sign, then not a decimal number: nothing, or no digit,
                | [0-9]+ (?: [^0-9.]             #   or digits and then something else,
                           | \. (?: $ | [^0-9]   #   or a dot with no digit after it,
                                  | [0-9]+ [^0-9] ) ) ) )  #   or something after the fraction
"""
"""Rules 1 and 2 of the module docstring as one pattern (rule 1 less rule 2): a match needs
the quote. One pattern rather than "starts with … and is not a number" so that polars scans
each column once (a quarter of the time of two patterns, measured on 200,000 rows). The same
text means the same in Python's ``re`` and polars' Rust regex: ``$`` is only tried where
``[^0-9]`` (which matches a newline) is too, so Python's ``$`` before a final newline
changes nothing."""
_UNSAFE_CELL = re.compile(_UNSAFE)
_FORMULA_START = frozenset("=+-@\t\r")  # a cheap first test; a frozenset so that "" is not in it


def safe_cell(value: str) -> str:
    """``value`` with the quote in front if a spreadsheet could run it (rules in the module docstring)."""
    if value[:1] in _FORMULA_START and _UNSAFE_CELL.match(value):
        return "'" + value
    return value


def _safe_row(row: Iterable[Any]) -> list[Any]:
    return [safe_cell(cell) if isinstance(cell, str) else cell for cell in row]


class SafeWriter:
    """``csv.writer`` (same arguments) whose string cells go through ``safe_cell``; other
    values (ints, ``None``) are written as ``csv.writer`` writes them."""

    def __init__(self, out: TextIO, **fmtparams: Any) -> None:
        self._writer = csv.writer(out, **fmtparams)

    def writerow(self, row: Iterable[Any]) -> None:
        self._writer.writerow(_safe_row(row))

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        self._writer.writerows(map(_safe_row, rows))


def safe_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with the cells of every String column made safe as ``safe_cell`` does,
    vectorised; other columns (numbers, times) and nulls unchanged."""
    return frame.with_columns(
        pl.when(pl.col(name).str.contains(_UNSAFE)).then(pl.lit("'") + pl.col(name)).otherwise(pl.col(name)).alias(name)
        for name, dtype in frame.schema.items() if dtype == pl.String
    )
