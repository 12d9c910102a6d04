"""Reconciliation: the calls that match no customer or no rate, grouped so an operator can
see what reference data is missing. Calls already invoiced are not listed."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cdrflow.db.models import Call
from cdrflow.money import ZERO

DESTINATION_DIGITS = 5
"""Unrated calls are grouped by the first digits of the dialled number (country and area)."""


@dataclass(frozen=True)
class ReconGroup:
    status: str  # unmatched | unrated
    key: str  # the CLI (unmatched) or "tariff: dialled prefix…" (unrated)
    carrier: str
    calls: int
    seconds: int
    cost: Decimal  # the carrier's cost of these calls: what is at stake
    example_reason: str


def reconciliation(session: Session) -> list[ReconGroup]:
    """Unmatched calls by CLI, then unrated calls by tariff and destination; biggest first."""
    groups: list[ReconGroup] = []
    unmatched = session.execute(
        select(Call.cli, Call.carrier, func.count(), func.sum(Call.duration), func.sum(Call.cost), func.min(Call.reason))
        .where(Call.status == "unmatched", Call.invoice_id.is_(None))
        .group_by(Call.cli, Call.carrier)
    )
    groups.extend(ReconGroup("unmatched", cli, carrier, n, secs or 0, cost or ZERO, reason)
                  for cli, carrier, n, secs, cost, reason in unmatched)
    prefix = func.substr(Call.dialled, 1, DESTINATION_DIGITS)
    unrated = session.execute(
        select(Call.tariff, prefix, Call.carrier, func.count(), func.sum(Call.duration), func.sum(Call.cost),
               func.min(Call.reason))
        .where(Call.status == "unrated", Call.invoice_id.is_(None))
        .group_by(Call.tariff, prefix, Call.carrier)
    )
    groups.extend(ReconGroup("unrated", f"{tariff}: {digits}…", carrier, n, secs or 0, cost or ZERO, reason)
                  for tariff, digits, carrier, n, secs, cost, reason in unrated)
    return sorted(groups, key=lambda g: (g.status, -g.calls, g.key))
