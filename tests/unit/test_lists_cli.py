"""``cdrflow carriers|customers|tariffs|rates|schedules|clis|sources|charges|invoices list|show``:
through the admin API (Starlette's TestClient, SQLite, local-admin's token from the data
directory, as the CLI on the machine sends it), each a table with a header row of the JSON's
keys, or the API's JSON with --json; an unknown id is a clear error naming the list command."""

from decimal import Decimal

import orjson
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from cdrflow_app.cli import main
from cdrflow.client import AdminClient
from cdrflow.db.models import Source
from services.admin.app import create_app
from services.scheduler.charges import add_charge
from tests.unit.test_dlq_api import RecordingProducer
from tests.unit.test_handlers import runtime  # noqa: F401  (fixture)


@pytest.fixture
def cli(runtime, monkeypatch):
    runtime.__dict__["producer"] = RecordingProducer()
    api = TestClient(create_app(runtime))  # create_app writes local-admin's token to <data_dir>/admin.token
    made = AdminClient.for_settings.__func__

    def for_settings(cls, settings, timeout=60):  # the real client, its requests served in-process
        client = made(cls, settings, timeout)
        client._http = api
        return client

    monkeypatch.setattr(AdminClient, "for_settings", classmethod(for_settings))
    monkeypatch.setenv("CDRFLOW_DATA_DIR", str(runtime.settings.data_dir))
    monkeypatch.delenv("CDRFLOW_API_TOKEN", raising=False)
    with runtime.database.transaction() as session:
        add_charge(session, customer="ACME", description="Line rental", amount="12.50", frequency="monthly",
                   start="2026-11-01", created_by="alice")
        session.add(Source(name="gamma-sftp", carrier="gamma", protocol="sftp", host="sftp.gamma.example", port=22,
                           username="acme", secret=None, remote_dir="/out", poll_interval=300,
                           delete_after_collect=False, verify_tls=True, host_key=None, tls_ca=None,
                           rules='[{"pattern": "*", "kind": "cdr", "period": "daily", "direction": "outbound"}]',
                           enabled=True, state="new", failures=0, collected=0))
    yield lambda *args: CliRunner().invoke(main, list(args))
    api.close()


def table(output: str) -> tuple[list[str], list[list[str]]]:
    header, *rows = output.splitlines()
    return header.split(), [r.split() for r in rows]


LISTS = {
    # group: (the header's first columns, the first row's first cells)
    "carriers": (["carrier", "name", "cdr_format"], ["btw", "BT"]),
    "customers": (["customer", "name", "tariff"], ["ACME", "Acme"]),
    "tariffs": (["tariff", "name", "schedule"], ["business", "Business"]),
    "rates": (["id", "kind", "owner", "direction", "carrier", "version", "active"],
              ["1", "retail", "business", "outbound", "-", "1", "yes"]),
    "schedules": (["schedule", "built_in"], ["uk-default", "yes"]),
    "clis": (["customer", "kind", "value"], ["ACME", "ddi", "441632960001"]),
    "sources": (["source", "carrier", "protocol"], ["gamma-sftp", "gamma", "sftp"]),
    "charges": (["id", "customer", "amount"], ["1", "ACME", "12.50"]),
}


@pytest.mark.parametrize("group", sorted(LISTS))
def test_each_list_has_a_header_row_of_the_json_keys_and_the_same_rows_as_json(cli, group):
    listed = cli(group, "list")
    assert listed.exit_code == 0, listed.output
    header, rows = table(listed.output)
    columns, first = LISTS[group]
    assert header[:len(columns)] == columns
    assert rows[0][:len(first)] == first
    as_json = cli(group, "list", "--json")
    assert as_json.exit_code == 0, as_json.output
    found = orjson.loads(as_json.output)
    assert len(found) == len(rows)
    if group != "charges":  # charges list keeps its own older header (qty for quantity)
        assert set(header) <= set(found[0]), (header, sorted(found[0]))


def test_invoices_list_has_a_header_row_and_says_when_there_are_none(cli):
    listed = cli("invoices", "list")
    assert listed.exit_code == 0, listed.output
    assert listed.output == "no invoices\n"
    assert orjson.loads(cli("invoices", "list", "--json").output) == []


SHOWS = {
    # (group, id): (a key of the JSON, its value, the text line that shows it)
    ("carriers", "gamma"): ("cdr_format", "generic-cdr", "cdr_format"),
    ("customers", "ACME"): ("tariff", "business", "tariff"),
    ("tariffs", "business"): ("schedule", "uk-default", "schedule"),
    ("rates", "1"): ("owner", "business", "owner"),
    ("schedules", "uk-default"): ("built_in", True, "built_in"),
    ("clis", "+441632960001"): ("value", "441632960001", "value"),  # as stored: E.164 digits
    ("sources", "gamma-sftp"): ("host", "sftp.gamma.example", "host"),
    ("charges", "1"): ("amount", "12.50", "amount"),
}


@pytest.mark.parametrize("group,key", sorted(SHOWS))
def test_each_show_prints_its_fields_by_their_json_keys_or_the_json(cli, group, key):
    field, value, label = SHOWS[(group, key)]
    shown = cli(group, "show", key, "--json")
    assert shown.exit_code == 0, shown.output
    assert orjson.loads(shown.output)[field] == value
    text = cli(group, "show", key)
    assert text.exit_code == 0, text.output
    line = next(line for line in text.output.splitlines() if line.split()[:1] == [label])
    assert line.split()[1] == ("yes" if value is True else value)


@pytest.mark.parametrize("group,listed_by", [
    ("carriers", "cdrflow carriers list"), ("customers", "cdrflow customers list"),
    ("tariffs", "cdrflow tariffs list"), ("rates", "cdrflow rates list"), ("schedules", "cdrflow schedules list"),
    ("clis", "cdrflow clis list"), ("sources", "cdrflow sources list"), ("charges", "cdrflow charges list"),
    ("invoices", "cdrflow invoices list"),
])
def test_an_unknown_id_is_a_clear_error_naming_the_list_command(cli, group, listed_by):
    shown = cli(group, "show", "NOSUCH-99")
    assert shown.exit_code == 1
    assert "NOSUCH-99" in shown.output and "HTTP 404" in shown.output, shown.output
    if group != "invoices":
        assert listed_by in shown.output, shown.output


def test_a_show_lists_its_objects_as_a_table_of_their_own(cli):
    shown = cli("customers", "show", "ACME")
    lines = shown.output.splitlines()
    at = lines.index("clis (2):")
    assert lines[at + 1].split()[:2] == ["kind", "value"]
    assert [line.split()[1] for line in lines[at + 2:at + 4]] == ["441632960001", "441632960002"]


def test_money_is_decimal_text_and_times_carry_their_offset(cli):
    [charge] = orjson.loads(cli("charges", "list", "--json").output)
    assert Decimal(charge["amount"]) == Decimal("12.50") and isinstance(charge["amount"], str)
    [sheet, *_] = orjson.loads(cli("rates", "list", "--json").output)
    assert sheet["loaded_at"].endswith("+00:00")
    rates = orjson.loads(cli("rates", "show", "1", "--json", "--limit", "2").output)["rates"]
    assert len(rates) == 2 and all(isinstance(r["peak"], str) for r in rates)
    assert Decimal(rates[0]["peak"]) >= 0


def test_long_names_keep_the_columns_in_line(cli, runtime):
    with runtime.database.transaction() as session:
        from services.parser.custom import save_carrier

        save_carrier(session, "verylongcarriercode", "A Carrier With A Very Long Name Indeed Ltd")
    header, *rows = cli("carriers", "list").output.splitlines()
    start = header.index("cdr_format")
    assert len(rows) == 3 and all(row[start:].split()[0] == "generic-cdr" for row in rows), rows


def test_sources_list_shows_the_warnings_and_never_the_credentials(cli):
    listed = cli("sources", "list")
    assert "host key NOT pinned" in listed.output
    shown = orjson.loads(cli("sources", "show", "gamma-sftp", "--json").output)
    assert "secret" not in shown and "password" not in listed.output
    assert shown["host_key_pinned"] is False and shown["warnings"] == ["host key NOT pinned"]


def test_sources_status_and_files_have_a_header_row_and_json(cli, runtime):
    with runtime.database.transaction() as session:
        source = session.get(Source, "gamma-sftp")
        source.state, source.failures, source.last_error = "failing", 2, "can't reach sftp.gamma.example:22"
    status = cli("sources", "status")
    assert status.exit_code == 0, status.output
    header, rows = table(status.output)
    assert header == ["source", "state", "collected", "failures", "last_success", "next_poll", "last_error"]
    assert rows[0][:4] == ["gamma-sftp", "failing", "0", "2"] and status.output.rstrip().endswith("example:22")
    found = orjson.loads(cli("sources", "status", "--json").output)
    assert found[0]["last_error"] == "can't reach sftp.gamma.example:22" and found[0]["next_poll"] is None

    assert cli("files").output == "no files\n"
    assert orjson.loads(cli("files", "--json").output) == []
