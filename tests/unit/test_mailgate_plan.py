"""What each mailed file becomes (services/mailgate/plan.py): carrier, kind, period, direction."""

from __future__ import annotations

import pytest

from services.mailgate.addresses import parse_address
from services.mailgate.extract import Extraction, FoundFile, IgnoredPart, MessageRefused
from services.mailgate.plan import CarrierRule, plan_arrivals

DOMAIN = "cdr.example.net"
CARRIERS = {
    "gamma": CarrierRule("gamma", r"^gamma[-_]", "billing@gamma.example @cdr.gamma.example"),
    "btw": CarrierRule("btw", r"^btw", None),
    "nopattern": CarrierRule("nopattern", None, None),
}


def files(*file_names: str) -> Extraction:
    return Extraction(files=[FoundFile(n, b"data", str(i), None, 4) for i, n in enumerate(file_names, start=2)])


def plan(recipients: list[str], found: Extraction, sender: str = "billing@gamma.example",
         authenticated: bool = False, carriers: dict[str, CarrierRule] = CARRIERS):
    return plan_arrivals([parse_address(r, DOMAIN) for r in recipients], found, carriers, sender, authenticated)


def test_cdrs_finds_each_files_carrier_by_its_file_name_pattern():
    arrivals = plan([f"cdrs@{DOMAIN}"], files("GAMMA_20261001.csv", "btw-monthly-2026-10.csv"))
    assert [(a.meta.carrier, a.meta.kind, a.meta.period) for a in arrivals] == [
        ("gamma", "cdr", "daily"), ("btw", "cdr", "monthly")]


def test_a_file_no_carrier_claims_refuses_the_message_saying_which_address_to_use():
    with pytest.raises(MessageRefused, match=r"file mystery\.csv: no carrier's file-name pattern matches it; send it "
                                             r"to <carrier>\.cdrs@"):
        plan([f"cdrs@{DOMAIN}"], files("mystery.csv"))


def test_a_file_two_carriers_claim_is_refused_naming_both():
    carriers = CARRIERS | {"gamma2": CarrierRule("gamma2", "^gamma", None)}
    with pytest.raises(MessageRefused, match=r"several carriers \(gamma, gamma2\)"):
        plan([f"cdrs@{DOMAIN}"], files("gamma_1.csv"), carriers=carriers)


def test_an_invalid_pattern_claims_nothing_instead_of_failing_every_message():
    carriers = {"bad": CarrierRule("bad", "([", None), "btw": CARRIERS["btw"]}
    assert carriers["bad"].pattern_problem() is not None
    assert [a.meta.carrier for a in plan([f"cdrs@{DOMAIN}"], files("btw1.csv"), carriers=carriers)] == ["btw"]


@pytest.mark.parametrize(("local", "kind", "period"), [
    ("gamma.cdrs", "cdr", "daily"), ("gamma.daily", "cdr", "daily"), ("gamma.monthly", "cdr", "monthly"),
    ("gamma.sdr", "sdr", "monthly"),
])
def test_a_carrier_address_sets_carrier_kind_and_period_whatever_the_name(local, kind, period):
    (arrival,) = plan([f"{local}@{DOMAIN}"], files("anything.csv"))
    m = arrival.meta
    assert (m.carrier, m.kind, m.period, m.direction, m.channel) == ("gamma", kind, period, "outbound", "mailgate")


def test_each_recipient_is_a_route_so_one_file_to_two_addresses_arrives_twice():
    arrivals = plan([f"gamma.daily@{DOMAIN}", f"btw.sdr@{DOMAIN}"], files("x.csv"))
    assert [(a.meta.carrier, a.meta.kind) for a in arrivals] == [("gamma", "cdr"), ("btw", "sdr")]


def test_a_sender_off_the_carriers_allow_list_is_refused():
    with pytest.raises(MessageRefused, match=r"sender someone@else\.example may not send files for carrier gamma") \
            as exc:
        plan([f"cdrs@{DOMAIN}"], files("gamma_1.csv"), sender="someone@else.example")
    assert exc.value.code == 550


def test_an_authenticated_operator_may_forward_any_carriers_files():
    (arrival,) = plan([f"gamma.daily@{DOMAIN}"], files("x.csv"), sender="ops@reseller.example", authenticated=True)
    assert arrival.meta.carrier == "gamma"


def test_a_hostile_file_name_is_made_safe():
    (arrival,) = plan([f"btw.daily@{DOMAIN}"], files("../../etc/passwd x.csv"))
    assert arrival.meta.original_name == "passwd_x.csv"


def test_a_message_with_only_ignored_parts_is_refused_saying_what_was_ignored():
    found = Extraction(ignored=[IgnoredPart("logo.png", "image (signature, logo or inline graphic)")])
    with pytest.raises(MessageRefused, match=r"no billing file attached \(ignored logo\.png: image"):
        plan([f"btw.daily@{DOMAIN}"], found)
