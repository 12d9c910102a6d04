"""Flat-rate pricing: charge = per-minute rate × seconds / 60, rounded once, half-up to 4 places."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from cdrflow.money import format_money, round_money


@dataclass(frozen=True, slots=True)
class CustomerRate:
    customer: str
    per_minute: Decimal


@dataclass(frozen=True, slots=True)
class RatedCall:
    row: int
    customer: str | None
    charge: Decimal | None
    status: str  # rated | unmatched | unrated
    reason: str | None

    def to_event(self, record: dict[str, object]) -> dict[str, object]:
        return record | {
            "customer": self.customer,
            "charge": None if self.charge is None else format_money(self.charge),
            "status": self.status,
            "reason": self.reason,
        }


def rate_call(row: int, duration: int, match_key: str, rate: CustomerRate | None) -> RatedCall:
    """Price one call; a call no customer claims is ``unmatched`` (kept for reconciliation)."""
    if rate is None:
        return RatedCall(row, None, None, "unmatched", f"no customer has CLI {match_key}")
    charge = round_money(rate.per_minute * duration / 60)
    return RatedCall(row, rate.customer, charge, "rated", None)
