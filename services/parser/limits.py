"""How much work one file may cost the parser, and how long a field of a row may be.

A hostile or broken file must end quickly with a reason an operator can act on, never keep
a parser busy for minutes or turn one field into a 50 MB message. Two kinds of bound:

- *per file* (``ParseLimits``): past any of them the whole file fails with ``BadFileError``
  naming the file, the limit and, where there is one, the line. Callers (tests, a service
  with its own settings) pass their own through the parser's ``limits`` option.
- *per field* (``FIELD_MAX_CHARS``): a row whose field is longer is a rejected row with its
  line number; the rest of the file goes on. These follow the database columns the fields
  are stored in, so they are not options.

Every limit and its reason text is listed in docs/formats.md ("Limits").
"""

from __future__ import annotations

from dataclasses import dataclass

GiB, MiB = 1024**3, 1024**2


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Bounds on one file's work; a file past any of them fails as a whole."""

    max_decompressed_bytes: int = 4 * GiB
    """A compressed file (gzip, bzip2, zip: all members together) that inflates beyond this is
    refused as a likely zip bomb. Four GiB is about 20 million rows of a wide carrier format."""
    max_lines: int = 50_000_000
    """Lines per file (blank ones too, all zip members together)."""
    max_line_bytes: int = 1 * MiB
    """A longer line is a rejected row (it is not a call record: carriers' lines are a few
    hundred bytes); it is skipped without being held in memory whole."""
    max_blank_run: int = 10_000
    """More blank lines than this in a row fails the file (a file of newlines is not a CDR file;
    without this a gigabyte of them would be read line by line to the end)."""

    def __post_init__(self) -> None:
        for name in ("max_decompressed_bytes", "max_lines", "max_line_bytes", "max_blank_run"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ParseLimits.{name} must be a whole number of at least 1, not {value!r}")


DEFAULT_LIMITS = ParseLimits()

NUMBER_MAX_CHARS = 32
"""A CLI or dialled number as written (``+``, spaces, a SIP user and all): the ``calls.cli`` and
``calls.dialled`` columns hold 32 characters. An E.164 number has at most 15 digits."""
FIELD_MAX_CHARS: dict[str, int] = {
    "cli": NUMBER_MAX_CHARS,
    "dialled": NUMBER_MAX_CHARS,
    "charge_code": 64,  # calls.charge_code
    "account_code": 64,  # calls.account_code, carrier_transactions.account_code
    "reference": 64,  # carrier_transactions.reference (a CLI, account or feature code)
    "event_type": 32,  # carrier_transactions.event_type
    "description": 1000,  # carrier_transactions.description (text): an invoice line, not a document
}
"""Longest value (characters, after stripping) of each text field; a longer one rejects the row."""
NUMBER_FIELDS = ("cli", "dialled")

RAW_MAX_CHARS = 1000
"""A rejected row keeps at most this much of its line (its start, and how much was cut)."""
SHOWN_VALUE_CHARS = 100
"""A value quoted in a rejection reason is cut to this many characters."""
