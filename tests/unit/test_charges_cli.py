"""Charges defined in cdrflow (``cdrflow charges add|list|end`` over the admin API) and a
customer's billing terms (``cdrflow customers add|edit``): stored as given, every bad value
refused with its own message and nothing stored."""

from decimal import Decimal

import orjson
import pytest
from click.testing import CliRunner
from sqlalchemy import select
from starlette.testclient import TestClient

import services.scheduler.commands
from cdrflow_app.cli import main
from cdrflow.client import AdminClient
from cdrflow.db.models import Customer, CustomerCharge, ReferenceChange
from services.admin.app import create_app
from tests.unit.test_dlq_api import RecordingProducer
from tests.unit.test_handlers import runtime  # noqa: F401  (fixture)
from tests.authhelp import authed


@pytest.fixture
def api(runtime):
    runtime.__dict__["producer"] = RecordingProducer()
    client = authed(TestClient(create_app(runtime)), runtime)
    yield client
    client.close()


@pytest.fixture
def cli(api, monkeypatch):
    client = AdminClient("http://testserver")
    client._http = api
    monkeypatch.setattr(services.scheduler.commands, "_admin", lambda ctx: client)
    monkeypatch.setenv("COLUMNS", "160")
    return lambda *args: CliRunner().invoke(main, ["charges", *args])


def stored_charges(runtime):
    with runtime.database.transaction() as session:
        return list(session.scalars(select(CustomerCharge).order_by(CustomerCharge.id)))


LINE_RENTAL = ("add", "--customer", "ACME", "--description", "Line rental", "--amount", "12.50", "--quantity", "2",
               "--frequency", "monthly", "--start", "2026-11-20", "--operator", "alice")


def test_a_recurring_charge_is_added_listed_and_ended_from_the_command_line(runtime, cli):
    added = cli(*LINE_RENTAL)
    assert added.exit_code == 0, added.output
    assert added.output.startswith("charge 1 added to ACME: Line rental, 12.50 x 2 monthly from 2026-11-20")
    [charge] = stored_charges(runtime)
    assert (charge.amount, charge.quantity, charge.frequency, str(charge.start), charge.end, charge.created_by) == \
        (Decimal("12.50"), 2, "monthly", "2026-11-20", None, "alice")

    listed = cli("list", "--customer", "ACME")
    header, row = listed.output.splitlines()
    assert header.split()[:4] == ["id", "customer", "amount", "qty"]
    assert row.split()[:8] == ["1", "ACME", "12.50", "2", "monthly", "2026-11-20", "-", "-"]
    [shown] = orjson.loads(cli("list", "--json").output)
    assert (shown["amount"], shown["tax_code"], shown["end"]) == ("12.50", None, None)

    ended = cli("end", "1", "--on", "2027-01-15", "--reason", "line ceased", "--operator", "bob")
    assert ended.exit_code == 0, ended.output
    assert ended.output == "charge 1 of ACME ends on 2027-01-15 (first day not charged)\n"
    assert str(stored_charges(runtime)[0].end) == "2027-01-15"
    with runtime.database.transaction() as session:
        change = session.scalars(select(ReferenceChange).where(ReferenceChange.entity == "charge")
                                 .order_by(ReferenceChange.id.desc())).first()
        assert change.detail == "ended on 2027-01-15 by bob: line ceased"


def test_a_one_off_credit_with_its_own_tax_code(runtime, cli):
    added = cli("add", "--customer", "BRISDENT", "--description", "Goodwill credit", "--amount", "-25",
                "--frequency", "once", "--start", "2026-11-03", "--tax", "zero", "--json")
    assert added.exit_code == 0, added.output
    shown = orjson.loads(added.output)
    assert (shown["amount"], shown["frequency"], shown["tax_code"], shown["end"]) == ("-25.00", "once", "zero", None)
    assert cli("list", "--customer", "ACME").output == "no charges\n"


@pytest.mark.parametrize(("change", "message"), [
    ({"--amount": "12.5.0"}, "amount '12.5.0' is not a plain decimal amount"),
    ({"--amount": "£12"}, "amount '£12' is not a plain decimal amount"),
    ({"--amount": "1e3"}, "amount '1e3' is not a plain decimal amount"),
    ({"--amount": "0.0000001"}, "at most 6 decimal places"),
    ({"--start": "2026-13-01"}, "start '2026-13-01' is not a date YYYY-MM-DD"),
    ({"--start": "20/11/2026"}, "start '20/11/2026' is not a date YYYY-MM-DD"),
    ({"--end": "2026-11-20"}, "ends on 2026-11-20, not after it starts on 2026-11-20"),
    ({"--end": "2026-11-01"}, "ends on 2026-11-01, not after it starts on 2026-11-20"),
    ({"--quantity": "0"}, "quantity 0 is not a whole number of at least 1"),
    ({"--quantity": "-1"}, "quantity '-1' is not a whole number of at least 1"),
    ({"--description": "  "}, "a charge needs a description"),
    ({"--customer": "NOSUCH"}, "unknown customer 'NOSUCH'"),
])
def test_a_bad_charge_is_refused_with_what_is_wrong_and_nothing_is_stored(runtime, cli, change, message):
    args = list(LINE_RENTAL)
    for option, value in change.items():
        if option in args:
            args[args.index(option) + 1] = value
        else:
            args += [option, value]
    refused = cli(*args)
    assert refused.exit_code == 1, refused.output
    assert message in refused.output
    assert stored_charges(runtime) == []


def test_a_one_off_charge_has_no_end_and_cannot_be_ended(runtime, cli):
    refused = cli("add", "--customer", "ACME", "--description", "Installation", "--amount", "99.00",
                  "--frequency", "once", "--start", "2026-11-20", "--end", "2026-12-01")
    assert refused.exit_code == 1 and "a one-off charge (frequency once)" in refused.output
    cli("add", "--customer", "ACME", "--description", "Installation", "--amount", "99.00", "--frequency", "once",
        "--start", "2026-11-20")
    ended = cli("end", "1", "--on", "2026-12-01", "--reason", "typo")
    assert ended.exit_code == 1 and "is a one-off charge: it has no end" in ended.output


def test_ending_a_charge_checks_the_day_and_the_charge(runtime, cli):
    cli(*LINE_RENTAL)
    before = cli("end", "1", "--on", "2026-11-20", "--reason", "x")
    assert before.exit_code == 1 and "its end 2026-11-20 must be after the start" in before.output
    bad_day = cli("end", "1", "--on", "2026-02-30", "--reason", "x")
    assert bad_day.exit_code == 1 and "end '2026-02-30' is not a date YYYY-MM-DD" in bad_day.output
    missing = cli("end", "7", "--on", "2027-01-01", "--reason", "x")
    assert missing.exit_code == 1 and "no charge '7'" in missing.output and "HTTP 404" in missing.output
    no_reason = cli("end", "1", "--on", "2027-01-01")
    assert no_reason.exit_code == 2 and "--reason" in no_reason.output
    assert stored_charges(runtime)[0].end is None


def test_the_api_refuses_an_amount_given_as_a_json_number(runtime, api):
    reply = api.post("/customers/ACME/charges", json={"description": "Line rental", "amount": 12.5,
                                                       "frequency": "monthly", "start": "2026-11-01"})
    assert reply.status_code == 422 and "not a number" in reply.json()["error"]
    unknown = api.post("/customers/ACME/charges", json={"description": "x", "amount": "1", "frequency": "monthly",
                                                         "start": "2026-11-01", "price": "1"})
    assert unknown.status_code == 422 and "unknown field(s) for a charge: price" in unknown.json()["error"]
    weekly = api.post("/customers/ACME/charges", json={"description": "x", "amount": "1", "frequency": "weekly",
                                                        "start": "2026-11-01"})
    assert weekly.status_code == 422 and "frequency 'weekly' is not one of monthly, quarterly, yearly, once" in \
        weekly.json()["error"]
    assert api.get("/customers/NOSUCH/charges").status_code == 404
    assert stored_charges(runtime) == []


# --- a customer's billing terms ---------------------------------------------------------


def customers(*args):
    return CliRunner().invoke(main, ["customers", *args])


@pytest.fixture
def local(runtime, monkeypatch):
    """``cdrflow customers`` acts on the database directly: point it at the test's."""
    monkeypatch.setenv("CDRFLOW_DATA_DIR", str(runtime.settings.data_dir))
    return runtime


def customer_row(runtime, code):
    with runtime.database.transaction() as session:
        return session.get(Customer, code)


def test_customers_add_takes_the_billing_terms_and_edit_changes_only_what_is_given(local):
    added = customers("add", "NEWCO", "--name", "New Co", "--tariff", "business", "--schedule", "Weekly:Friday",
                      "--tax", "zero", "--currency", "eur", "--address", "1 High St\\nBristol", "--email",
                      "accounts@newco.example", "--terms", "14")
    assert added.exit_code == 0, added.output
    row = customer_row(local, "NEWCO")
    assert (row.billing_schedule, row.tax_code, row.currency, row.address, row.billing_email,
            row.payment_terms_days) == ("weekly:fri", "zero", "EUR", "1 High St\nBristol", "accounts@newco.example", 14)
    edited = customers("edit", "NEWCO", "--schedule", "quarterly:feb:15", "--json")
    assert edited.exit_code == 0, edited.output
    view = orjson.loads(edited.output)
    assert (view["billing_schedule"], view["tax_code"], view["currency"], view["payment_terms_days"]) == \
        ("quarterly:2:15", "zero", "EUR", 14)
    plain = customers("add", "PLAIN", "--name", "Plain", "--tariff", "business")
    assert plain.exit_code == 0
    row = customer_row(local, "PLAIN")
    assert (row.billing_schedule, row.tax_code, row.currency, row.payment_terms_days) == ("monthly", "standard", "GBP", 30)


@pytest.mark.parametrize(("args", "message"), [
    (("--schedule", "monthly:29"), "day '29' is not a day 1-28"),
    (("--schedule", "fortnightly"), "billing schedule 'fortnightly' is not understood"),
    (("--currency", "XYZ"), "currency 'XYZ' is not one cdrflow invoices in: use one of GBP, EUR, USD"),
    (("--email", "accounts"), "billing email 'accounts' is not an address"),
    (("--terms", "400"), "payment terms 400 are not a whole number of days 0-365"),
])
def test_customers_edit_refuses_bad_terms_and_changes_nothing(local, args, message):
    refused = customers("edit", "ACME", *args)
    assert refused.exit_code == 1, refused.output
    assert message in refused.output
    assert customer_row(local, "ACME").billing_schedule == "monthly"


def test_customers_edit_of_an_unknown_customer_says_so(local):
    refused = customers("edit", "NOSUCH", "--tax", "exempt")
    assert refused.exit_code == 1 and "no customer 'NOSUCH'" in refused.output
