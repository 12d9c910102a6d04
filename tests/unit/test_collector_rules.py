"""The collector's pure parts: rules, what to fetch, settling, backoff, credentials at rest."""

from __future__ import annotations

import pytest

from cdrflow.errors import InputError
from services.collector.credentials import Credentials, decrypt, encrypt, new_secret_key
from services.collector.errors import SecretKeyError
from services.collector.poll import backoff_seconds, collected_file_id
from services.collector.rules import RemoteEntry, classify, directories, parse_rule, settled, to_fetch

RULES = [parse_rule("daily/*.csv=cdr,daily,outbound"), parse_rule("monthly/*.csv=cdr,monthly,outbound"),
         parse_rule("*_SDR_*=sdr,monthly,inbound")]


def test_a_rule_is_pattern_then_kind_period_direction():
    rule = parse_rule("monthly/*.CSV=CDR,Monthly,outbound")
    assert (rule.kind, rule.period, rule.direction) == ("cdr", "monthly", "outbound")
    assert rule.directory("/out") == "/out/monthly"
    assert rule.matches("gamma-202610.csv")


@pytest.mark.parametrize("spec, complaint", [
    ("*.csv", "PATTERN=KIND"), ("*.csv=cdr,daily", "PATTERN=KIND"), ("*.csv=xdr,daily,outbound", "kind 'xdr'"),
    ("*.csv=cdr,weekly,outbound", "period 'weekly'"), ("*.csv=cdr,daily,sideways", "direction 'sideways'"),
    ("../etc/*=cdr,daily,outbound", "plain path"), ("*/x.csv=cdr,daily,outbound", "plain path"),
])
def test_a_bad_rule_is_refused_saying_what_is_wrong(spec, complaint):
    with pytest.raises(InputError, match=complaint):
        parse_rule(spec)


def test_each_directory_is_listed_once_and_files_go_to_the_first_rule_of_their_directory():
    assert directories(RULES, "/out") == ["/out/daily", "/out/monthly", "/out"]
    entries = [RemoteEntry("/out/daily/a.csv", 10, 1), RemoteEntry("/out/daily/notes.txt", 10, 1)]
    [(entry, rule)] = classify(entries, "/out/daily", RULES, "/out")
    assert entry.name == "a.csv" and rule.period == "daily"
    [(_, sdr)] = classify([RemoteEntry("/out/X_SDR_1.txt", 5, 1)], "/out", RULES, "/out")
    assert (sdr.kind, sdr.direction) == ("sdr", "inbound")


def test_a_collected_file_is_fetched_again_only_when_its_size_or_mtime_changed():
    rule = RULES[0]
    same, grown, touched, new, empty = (RemoteEntry("a", 10, 100), RemoteEntry("b", 11, 100),
                                        RemoteEntry("c", 10, 101), RemoteEntry("d", 1, 1), RemoteEntry("e", 0, 1))
    collected = {"a": (10, 100), "b": (10, 100), "c": (10, 100)}
    fetch = to_fetch([(e, rule) for e in (same, grown, touched, new, empty)], collected)
    assert [e.path for e, _ in fetch] == ["b", "c", "d"]


def test_a_file_still_growing_between_two_listings_waits():
    rule = RULES[0]
    ready, waiting = settled([(RemoteEntry("a", 10, 1), rule), (RemoteEntry("b", 10, 1), rule)],
                             [RemoteEntry("a", 10, 1), RemoteEntry("b", 20, 2)])
    assert [e.path for e, _ in ready] == ["a"] and [e.path for e in waiting] == ["b"]


def test_backoff_doubles_from_the_poll_interval_up_to_the_cap():
    assert [backoff_seconds(60, n, 3600) for n in range(0, 9)] == [60, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert backoff_seconds(7200, 3, 3600) == 7200  # never sooner than the poll interval


def test_a_collected_file_keeps_its_file_id_when_fetched_again_after_a_crash():
    entry = RemoteEntry("daily/a.csv", 10, 100)
    assert collected_file_id("s", entry, "f" * 64) == collected_file_id("s", entry, "f" * 64)
    assert collected_file_id("s", entry, "f" * 64) != collected_file_id("s", RemoteEntry("daily/a.csv", 10, 101),
                                                                        "f" * 64)


def test_credentials_round_trip_encrypted_and_never_show_in_repr():
    key = new_secret_key()
    creds = Credentials(password="hunter2", private_key="-----BEGIN KEY-----", passphrase="pp")
    token = encrypt(creds, key)
    assert b"hunter2" not in token
    assert decrypt(token, key) == creds
    assert "hunter2" not in repr(creds) and "pp" not in repr(creds)


def test_credentials_need_the_secret_key_that_saved_them():
    token = encrypt(Credentials(password="x"), new_secret_key())
    with pytest.raises(SecretKeyError, match="not the key it was saved with"):
        decrypt(token, new_secret_key())
    with pytest.raises(SecretKeyError, match="CDRFLOW_SECRET_KEY is not set"):
        encrypt(Credentials(password="x"), None)
    with pytest.raises(SecretKeyError, match="not a valid Fernet key"):
        encrypt(Credentials(password="x"), "short")
