"""Reconciliation: the calls that match no customer or no rate, and the fixed fees that match no
customer or no fee-sheet row, grouped so an operator can see what reference data is missing.
Calls and fees already invoiced are not listed. Both leave by themselves once the reference
data is fixed: the rater re-rates the calls and matches the fees again on every change."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cdrflow.db.models import BillingTransaction, Call, CarrierTransaction
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


@dataclass(frozen=True)
class FeeGroup:
    status: str  # unmatched | unpriced
    reference: str  # the carrier transaction's reference (a number, a feature or product code)
    carrier: str
    fees: int
    cost: Decimal  # the carrier's cost of these fees: what is at stake
    example_reason: str


def fee_reconciliation(session: Session) -> list[FeeGroup]:
    """Unmatched, then unpriced fixed fees not on an invoice, by carrier and reference; most first."""
    b, t = BillingTransaction, CarrierTransaction
    found = session.execute(
        select(b.status, t.reference, t.carrier, func.count(), func.sum(b.cost), func.min(b.reason))
        .join(t, t.id == b.carrier_transaction_id)
        .where(b.status.in_(("unmatched", "unpriced")), b.invoice_id.is_(None))
        .group_by(b.status, t.reference, t.carrier))
    groups = [FeeGroup(status, reference or "", carrier, n, cost or ZERO, reason or "")
              for status, reference, carrier, n, cost, reason in found]
    return sorted(groups, key=lambda g: (g.status, -g.fees, g.reference))


def recon_view(groups: list[ReconGroup], fees: list[FeeGroup]) -> list[dict[str, object]]:
    """Both as ``GET /recon`` and ``cdrflow recon --json`` give them: calls first, then fees; each
    group says which it is (``subject``), a fee group's ``key`` is its reference."""
    return [{"subject": "call", "status": g.status, "key": g.key, "carrier": g.carrier, "calls": g.calls,
             "seconds": g.seconds, "cost": f"{g.cost:f}", "reason": g.example_reason} for g in groups] + \
        [{"subject": "fee", "status": f.status, "key": f.reference, "carrier": f.carrier, "fees": f.fees,
          "cost": f"{f.cost:f}", "reason": f.example_reason} for f in fees]
