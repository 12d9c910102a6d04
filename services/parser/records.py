"""What a parser yields for each line: a call record, or a rejected row (data, not an exception)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call as the carrier reported it, normalised. ``row`` is the 1-based line number."""

    row: int
    cli: str
    dialled: str
    start: datetime  # aware
    duration: int  # seconds
    cost: Decimal | None  # the carrier's own wholesale cost, when its CDR has one

    def to_event(self) -> dict[str, object]:
        return {
            "row": self.row,
            "cli": self.cli,
            "dialled": self.dialled,
            "start": self.start.isoformat(),
            "end": None,
            "duration": self.duration,
            "answered": True,
            "charge_code": None,
            "cost": None if self.cost is None else f"{self.cost:f}",
            "account_code": None,
            "direction": None,
        }


@dataclass(frozen=True, slots=True)
class RejectedRow:
    row: int
    reason: str
    raw: str

    def to_event(self) -> dict[str, object]:
        return {"row": self.row, "reason": self.reason, "raw": self.raw}
