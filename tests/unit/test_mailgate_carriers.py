"""Carriers' mail rules and accepted messages as operators manage them (services/mailgate/carriers.py),
over SQLite."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cdrflow.db import migrate
from cdrflow.db.models import MailMessage
from cdrflow.errors import InputError, UnknownCarrierError
from cdrflow.reference import add_carrier
from cdrflow.runtime import Runtime
from cdrflow.settings import Settings
from services.mailgate.carriers import UNCHANGED, mail_rules, retry_message, set_mail_rules
from services.mailgate.gateway import load_carriers


@pytest.fixture
def runtime(tmp_path):
    settings = Settings(data_dir=tmp_path)
    migrate(settings.effective_database_url)
    rt = Runtime(settings, "test")
    with rt.database.transaction() as session:
        add_carrier(session, "Gamma", "Gamma Telecom")
    yield rt
    rt.database.dispose()


def test_rules_are_set_separately_and_an_empty_value_clears_one(runtime):
    with runtime.database.transaction() as session:
        set_mail_rules(session, "Gamma", file_name_pattern=r"^gamma_", mail_senders="a@gamma.example, @cdr.gamma.example")
        set_mail_rules(session, "Gamma", file_name_pattern=UNCHANGED, mail_senders="")
        (rules,) = mail_rules(session)
    assert (rules.file_name_pattern, rules.mail_senders) == ("^gamma_", None)


def test_a_pattern_that_is_not_a_regular_expression_is_refused_with_an_example(runtime):
    with runtime.database.transaction() as session, \
            pytest.raises(InputError, match=r"file-name pattern '\[gamma' is not a regular expression .* e\.g\."):
        set_mail_rules(session, "Gamma", file_name_pattern="[gamma")


def test_rules_for_an_unknown_carrier_are_refused(runtime):
    with runtime.database.transaction() as session, pytest.raises(UnknownCarrierError):
        set_mail_rules(session, "nope", file_name_pattern="x")


def test_the_gateway_finds_a_carrier_whatever_the_case_of_its_code(runtime):
    with runtime.database.transaction() as session:
        set_mail_rules(session, "Gamma", file_name_pattern="^gamma", mail_senders="@gamma.example")
    carriers = load_carriers(runtime)
    assert list(carriers) == ["gamma"]
    assert carriers["gamma"].code == "Gamma" and carriers["gamma"].claims("GAMMA_1.csv")


def test_only_a_failed_message_can_be_retried(runtime):
    with runtime.database.transaction() as session:
        for message_id, status in (("m-failed", "failed"), ("m-done", "processed")):
            session.add(MailMessage(id=message_id, fingerprint="0" * 64, sender="a@b", recipients="[]",
                                    received_at=datetime.now(UTC), status=status, processed_at=datetime.now(UTC)))
    with runtime.database.transaction() as session:
        assert retry_message(session, "m-failed").status == "pending"
    with runtime.database.transaction() as session, pytest.raises(InputError, match="is processed, not failed"):
        retry_message(session, "m-done")
    with runtime.database.transaction() as session, pytest.raises(InputError, match="no mail message m-x"):
        retry_message(session, "m-x")
