"""The mail gateway's recipient addresses and sender allow-lists (services/mailgate/addresses.py)."""

from __future__ import annotations

import pytest

from services.mailgate.addresses import Route, UnknownAddress, parse_address, sender_allowed

DOMAIN = "cdr.example.net"


def test_cdrs_at_domain_leaves_the_carrier_to_the_file_name():
    assert parse_address("cdrs@cdr.example.net", DOMAIN) == Route("cdrs@cdr.example.net", None, "cdr", None)


@pytest.mark.parametrize(("local", "kind", "period"), [
    ("gamma.cdrs", "cdr", None), ("gamma.daily", "cdr", "daily"), ("gamma.monthly", "cdr", "monthly"),
    ("gamma.sdr", "sdr", "monthly"),
])
def test_each_carrier_address_form_names_the_carrier_kind_and_period(local, kind, period):
    route = parse_address(f"{local}@{DOMAIN}", DOMAIN)
    assert (route.carrier, route.kind, route.period) == ("gamma", kind, period)


def test_addresses_are_case_insensitive_and_may_come_in_angle_brackets():
    route = parse_address("<Gamma.Monthly@CDR.Example.NET>", DOMAIN)
    assert (route.carrier, route.kind, route.period) == ("gamma", "cdr", "monthly")


def test_a_carrier_code_with_dots_keeps_them():
    assert parse_address(f"bt.wholesale.daily@{DOMAIN}", DOMAIN).carrier == "bt.wholesale"


@pytest.mark.parametrize("address", [f"invoices@{DOMAIN}", f"gamma.weekly@{DOMAIN}", f".cdrs@{DOMAIN}",
                                     f"gamma@{DOMAIN}"])
def test_an_unknown_mailbox_is_refused_with_the_forms_that_exist(address):
    with pytest.raises(UnknownAddress, match=r"no such mailbox .* send files to cdrs@cdr\.example\.net"):
        parse_address(address, DOMAIN)


@pytest.mark.parametrize("address", ["cdrs@other.example", "cdrs", "cdrs@cdr.example.net.evil"])
def test_another_domain_is_refused_naming_the_gateways_domain(address):
    with pytest.raises(UnknownAddress, match=r"only takes mail for @cdr\.example\.net"):
        parse_address(address, DOMAIN)


def test_cdrs_address_tells_daily_from_monthly_by_the_file_name():
    route = parse_address(f"gamma.cdrs@{DOMAIN}", DOMAIN)
    assert route.period_of("GAMMA_MONTHLY_202610.csv") == "monthly"
    assert route.period_of("gamma-20261001.csv") == "daily"


def test_a_fixed_period_address_ignores_the_file_name():
    assert parse_address(f"gamma.daily@{DOMAIN}", DOMAIN).period_of("monthly-summary.csv") == "daily"


def test_an_empty_allow_list_allows_anyone():
    assert sender_allowed("anyone@anywhere.example", None)
    assert sender_allowed("anyone@anywhere.example", "  ")


def test_an_allow_list_takes_whole_addresses_and_domains():
    allow = "billing@gamma.example, @cdr.gamma.example"
    assert sender_allowed("<Billing@Gamma.example>", allow)
    assert sender_allowed("robot@cdr.gamma.example", allow)
    assert not sender_allowed("someone@gamma.example", allow)
    assert not sender_allowed("robot@evil-cdr.gamma.example.com", allow)
    assert not sender_allowed("", allow)  # a null sender (a bounce) is not on any list
