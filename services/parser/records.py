"""A rejected row: data, not an exception. ``row`` is the 1-based line number in the file."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RejectedRow:
    row: int
    reason: str
    raw: str  # the line as it was in the file (decoded), without its line end

    def to_event(self) -> dict[str, object]:
        return {"row": self.row, "reason": self.reason, "raw": self.raw}
