"""What each billing file in a message becomes: carrier, kind, period, direction (pure).

Every recipient of the message is a route; each file goes down each route. A file sent to
``cdrs@`` belongs to the one carrier whose file-name pattern it matches. Any file that can't be
placed refuses the whole message with the reason, before the gateway answers 250, so a carrier
gets a bounce it can act on instead of a file silently dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cdrflow.intake import FileMetadata, safe_name
from services.mailgate.addresses import Route, sender_allowed
from services.mailgate.extract import Extraction, FoundFile, MessageRefused

DIRECTION = "outbound"  # carriers mail the CDRs of calls our customers made


@dataclass(frozen=True)
class CarrierRule:
    code: str
    file_name_pattern: str | None
    mail_senders: str | None

    def claims(self, file_name: str) -> bool:
        """Whether a file sent to cdrs@ with this name is this carrier's (an invalid pattern claims nothing)."""
        if not self.file_name_pattern or self.pattern_problem() is not None:
            return False
        return re.search(self.file_name_pattern, file_name, re.IGNORECASE) is not None

    def pattern_problem(self) -> str | None:
        """Why the file-name pattern is not a usable regular expression, or None."""
        try:
            re.compile(self.file_name_pattern or "")
        except re.error as exc:
            return f"file-name pattern {self.file_name_pattern!r} is not a regular expression: {exc}"
        return None


@dataclass(frozen=True)
class Arrival:
    file: FoundFile
    route: Route
    meta: FileMetadata


def sender_refusal(carrier: CarrierRule, sender: str) -> MessageRefused | None:
    if sender_allowed(sender, carrier.mail_senders):
        return None
    return MessageRefused(550, "5.7.1", f"sender {sender or '<>'} may not send files for carrier {carrier.code} "
                          "(not on its sender allow-list)")


def carrier_of(name: str, carriers: dict[str, CarrierRule]) -> CarrierRule:
    claiming = [c for c in carriers.values() if c.claims(name)]
    if len(claiming) == 1:
        return claiming[0]
    if not claiming:
        raise MessageRefused(554, "5.6.0", f"file {name}: no carrier's file-name pattern matches it; send it to "
                             "<carrier>.cdrs@ instead of cdrs@")
    raise MessageRefused(554, "5.6.0", f"file {name}: matches the file-name patterns of several carriers "
                         f"({', '.join(sorted(c.code for c in claiming))}); send it to <carrier>.cdrs@")


def plan_arrivals(routes: list[Route], found: Extraction, carriers: dict[str, CarrierRule], sender: str,
                  authenticated: bool) -> list[Arrival]:
    """The arrivals a message makes, or MessageRefused. An authenticated operator skips allow-lists."""
    if not found.files:
        ignored = "; ".join(f"{p.name}: {p.reason}" for p in found.ignored[:3])
        raise MessageRefused(554, "5.6.0", "no billing file attached" + (f" (ignored {ignored})" if ignored else ""))
    arrivals = []
    for route in routes:
        for file in found.files:
            if route.carrier is None:
                carrier = carrier_of(file.name, carriers)
            elif route.carrier in carriers:
                carrier = carriers[route.carrier]
            else:
                raise MessageRefused(550, "5.1.1", f"no carrier {route.carrier!r} (recipient {route.address})")
            if not authenticated and (refusal := sender_refusal(carrier, sender)):
                raise refusal
            meta = FileMetadata(carrier=carrier.code, kind=route.kind, period=route.period_of(file.name),
                                direction=DIRECTION, original_name=safe_name(file.name), channel="mailgate")
            arrivals.append(Arrival(file, route, meta))
    return arrivals
