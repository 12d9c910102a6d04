"""The gateway's recipient addresses, on the configured mail domain (pure; no database).

========================  ===========================================================
``cdrs@``                 carrier found from the file name (carriers' file-name patterns)
``<carrier>.cdrs@``       that carrier's CDRs; monthly if the name says "month", else daily
``<carrier>.daily@``      that carrier's daily CDRs
``<carrier>.monthly@``    that carrier's monthly CDRs
``<carrier>.sdr@``        that carrier's SDRs (fixed-fee files), monthly
========================  ===========================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_CARRIER_FORMS = {"cdrs": ("cdr", None), "daily": ("cdr", "daily"), "monthly": ("cdr", "monthly"),
                  "sdr": ("sdr", "monthly")}
_MONTHLY_NAME = re.compile(r"month", re.IGNORECASE)


class UnknownAddress(ValueError):
    """The recipient is not one of the gateway's address forms; str() is the reason for the 550."""


@dataclass(frozen=True)
class Route:
    """Where files sent to one recipient go."""

    address: str
    carrier: str | None  # None: found from each file's name
    kind: str
    period: str | None  # None: told from each file's name

    def period_of(self, file_name: str) -> str:
        if self.period is not None:
            return self.period
        return "monthly" if _MONTHLY_NAME.search(file_name) else "daily"


def parse_address(address: str, domain: str) -> Route:
    """A recipient address → its Route, or UnknownAddress saying which forms exist."""
    local, at, host = address.strip().strip("<>").rpartition("@")
    forms = (f"cdrs@{domain}, <carrier>.cdrs@{domain}, <carrier>.daily@{domain}, "
             f"<carrier>.monthly@{domain} or <carrier>.sdr@{domain}")
    if not at or host.lower() != domain.lower():
        raise UnknownAddress(f"this gateway only takes mail for @{domain} ({forms})")
    local = local.lower()
    if local == "cdrs":
        return Route(address, None, "cdr", None)
    carrier, dot, form = local.rpartition(".")
    if not dot or not carrier or form not in _CARRIER_FORMS:
        raise UnknownAddress(f"no such mailbox {local!r}: send files to {forms}")
    kind, period = _CARRIER_FORMS[form]
    return Route(address, carrier, kind, period)


def sender_allowed(sender: str, allow_list: str | None) -> bool:
    """``allow_list``: addresses or ``@domain``s separated by spaces or commas; empty allows anyone."""
    entries = [e.strip().lower() for e in re.split(r"[\s,]+", allow_list or "") if e.strip()]
    if not entries:
        return True
    sender = sender.strip().strip("<>").lower()
    domain = "@" + sender.rpartition("@")[2]
    return sender in entries or domain in entries
