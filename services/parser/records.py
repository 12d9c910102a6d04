"""A rejected row: data, not an exception. ``row`` is the 1-based line number in the file.

A rejection is stored and printed (``cdrflow files show``), so it stays short whatever the
line held: its reason at most ``REASON_MAX_CHARS`` and its raw line at most ``RAW_MAX_CHARS``
characters, each cut with a note of how much was left out (``cdrflow.reasons.shorten``).
"""

from __future__ import annotations

from dataclasses import dataclass

from cdrflow.reasons import REASON_MAX_CHARS, shorten
from services.parser.limits import RAW_MAX_CHARS


@dataclass(frozen=True, slots=True)
class RejectedRow:
    row: int
    reason: str
    raw: str  # the line as it was in the file (decoded), without its line end; cut to RAW_MAX_CHARS

    def __post_init__(self) -> None:
        # The engine cuts both before they become Python strings; this keeps every other maker honest.
        if len(self.reason) > REASON_MAX_CHARS:
            object.__setattr__(self, "reason", shorten(self.reason))
        if len(self.raw) > RAW_MAX_CHARS:
            object.__setattr__(self, "raw", shorten(self.raw, RAW_MAX_CHARS))

    def to_event(self) -> dict[str, object]:
        return {"row": self.row, "reason": self.reason, "raw": self.raw}


def clip(head: str, total: int, limit: int = RAW_MAX_CHARS) -> str:
    """What ``shorten`` makes of a text of ``total`` characters that begins with ``head`` (at
    least ``limit`` of them when it is longer), without the whole text ever being held."""
    if total <= limit:
        return head
    tail = f"… ({total - limit:,} more characters)"
    return head[: max(0, limit - len(tail))] + tail


def clip_line(head: str, length: int, limit: int = RAW_MAX_CHARS) -> str:
    """The start of a line read past without being held (``length`` in bytes), and that it was cut."""
    tail = f"… (cut: the line is {length:,} bytes long)"
    return head[: max(0, limit - len(tail))] + tail
