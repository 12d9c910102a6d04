"""A carrier's duplicate rules, as operators set them (the dedupe service reads them per file)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from cdrflow.db.models import Carrier
from cdrflow.errors import UnknownCarrierError
from cdrflow.reference import record_change


def set_hold_same_name(session: Session, carrier_code: str, on: bool) -> Carrier:
    """Turn the rule "same name" on or off for a carrier; the change is logged like any reference change."""
    carrier = session.get(Carrier, carrier_code)
    if carrier is None:
        raise UnknownCarrierError(carrier_code)
    carrier.hold_same_name = on
    record_change(session, "carrier", carrier_code, "changed", f"hold same name: {'on' if on else 'off'}")
    return carrier
