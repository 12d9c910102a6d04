"""Invoices over the admin API (Starlette's TestClient, SQLite, the broker faked) and ``cdrflow
invoices`` / ``cdrflow files reverse`` (CliRunner): list, show, PDF, CSV, a credit through the
admin outbox to the invoicer, and a reverse refused once the file is invoiced."""

import io

import orjson
import pytest
from click.testing import CliRunner
from pypdf import PdfReader
from sqlalchemy import select
from starlette.testclient import TestClient

import cdrflow.cli_files
import services.admin.app
import services.invoicer.commands
from cdrflow_app.cli import main
from cdrflow.db import migrate
from cdrflow.db.models import Invoice, OutboxEntry
from cdrflow_app.demo import load_sample_reference
from cdrflow.events import Event
from cdrflow.runtime import Runtime
from cdrflow.settings import Settings
from services.admin.app import create_app
from services.invoicer.commands import InvoicesClient
from services.invoicer.service import Invoicer
from tests.schemas import validate_event
from tests.unit.test_credit_notes import billed_october
from tests.unit.test_dlq_api import RecordingProducer
from tests.unit.test_handlers import handle
from tests.authhelp import authed


@pytest.fixture
def runtime(tmp_path):
    settings = Settings(data_dir=tmp_path, batch_size=3, seller_name="Northwind Voice Ltd",
                        seller_address="1 High Street|Leeds LS1 1AA", seller_vat_number="GB123456789",
                        seller_email="billing@northwind.example")
    migrate(settings.effective_database_url)
    rt = Runtime(settings, "test")
    with rt.database.transaction() as session:
        load_sample_reference(session, rt.store)
    yield rt
    rt.database.dispose()


@pytest.fixture
def api(runtime, monkeypatch):
    monkeypatch.setattr(services.admin.app, "ANNOUNCE_WAIT_S", 0)  # no relay runs here: don't wait for it
    runtime.__dict__["producer"] = RecordingProducer()
    client = authed(TestClient(create_app(runtime)), runtime)  # not entered: no lifespan, no background relay
    billed_october(runtime)
    yield client
    client.close()


@pytest.fixture
def cli(api, monkeypatch):
    client = InvoicesClient("http://testserver")
    client._http = api  # Starlette's TestClient is an httpx.Client
    monkeypatch.setattr(services.invoicer.commands, "_client", lambda ctx: client)
    monkeypatch.setattr(cdrflow.cli_files, "_admin", lambda ctx: client)
    return lambda *args: CliRunner().invoke(main, list(args))


def deliver_admin_commands(runtime):
    """What the admin relay and the invoicer's consumer would do: each queued command, handled."""
    with runtime.database.transaction() as session:
        entries = session.scalars(select(OutboxEntry).where(OutboxEntry.topic.endswith("admin-commands"),
                                                            OutboxEntry.published_at.is_(None))).all()
        events = [Event.from_bytes(e.payload) for e in entries]
        for e in entries:
            e.published_at = e.created_at
    for event in events:
        handle(runtime, Invoicer(runtime).on_admin_command, event)  # validates the command's schema too
    return events


def test_invoices_are_listed_and_shown_with_lines_net_vat_total_and_status(api):
    [listed] = api.get("/invoices", params={"customer": "ACME"}).json()
    assert (listed["invoice_number"], listed["status"], listed["currency"]) == ("INV-000001", "issued", "GBP")
    assert (listed["net"], listed["tax"], listed["total"], listed["credit_note"]) == ("0.32", "0.06", "0.38", None)
    shown = api.get("/invoices/INV-000001").json()
    assert [(line["description"], line["quantity"], line["amount"], line["tax_code"]) for line in shown["lines"]] \
        == [("Call Charges", 7, "0.32", "standard")]
    assert api.get("/invoices", params={"customer": "NOBODY"}).json() == []
    assert api.get("/invoices/INV-999999").status_code == 404


def test_the_pdf_is_rendered_once_kept_in_the_store_and_shows_the_number_and_total(api, runtime):
    reply = api.get("/invoices/INV-000001/pdf")
    assert (reply.status_code, reply.headers["content-type"]) == (200, "application/pdf")
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(reply.content)).pages)
    assert "INV-000001" in text and "£0.38" in text and "Northwind Voice Ltd" in text
    with runtime.database.transaction() as session:
        document = session.scalar(select(Invoice.document).where(Invoice.number == "INV-000001"))
    assert runtime.store.read_bytes(document) == reply.content
    assert api.get("/invoices/INV-000001/pdf").content == reply.content


def test_the_calls_csv_lists_the_invoices_calls(api):
    reply = api.get("/invoices/INV-000001/calls.csv")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/csv")
    header, *calls = reply.text.splitlines()
    assert header.startswith("Date,Time,CLI") and len(calls) == 7


def test_a_credit_goes_to_the_invoicer_as_an_admin_command_and_a_second_is_refused(api, runtime):
    assert api.post("/invoices/INV-000001/credit", json={}).status_code == 422  # a reason is required
    assert api.post("/invoices/INV-424242/credit", json={"reason": "x"}).status_code == 404
    reply = api.post("/invoices/INV-000001/credit", json={"reason": "wrong rates"}, headers={"x-operator": "sam"})
    assert reply.status_code == 202 and reply.json()["invoice_number"] == "INV-000001"
    with runtime.database.transaction() as session:  # the web tier changed nothing itself
        assert session.scalar(select(Invoice.status).where(Invoice.number == "INV-000001")) == "issued"
    [command] = deliver_admin_commands(runtime)
    assert (command.data["command"], command.data["operator"]) == ("credit", "sam")
    again = api.post("/invoices/INV-000001/credit", json={"reason": "again"})
    assert again.status_code == 409 and again.json()["credit_note_number"] == "CN-000001"
    shown = api.get("/invoices/INV-000001").json()
    assert shown["status"] == "credited"
    assert {k: shown["credit_note"][k] for k in ("credit_note_number", "total", "operator", "reason")} == {
        "credit_note_number": "CN-000001", "total": "-0.38", "operator": "sam", "reason": "wrong rates"}
    assert len(api.get("/invoices/INV-000001/calls.csv").text.splitlines()) == 8  # the CSV as issued stays


def test_a_reverse_of_an_invoiced_file_is_refused_with_the_invoice_to_credit(api, runtime):
    [file] = [f for f in api.get("/files").json() if f["original_name"] == "gamma-cdr-20261001.csv"]
    assert api.post(f"/files/{file['file_id']}/reverse", json={}).status_code == 422
    refused = api.post(f"/files/{file['file_id']}/reverse", json={"reason": "wrong file"})
    assert refused.status_code == 409 and "credit invoice INV-000001 first" in refused.json()["error"]
    api.post("/invoices/INV-000001/credit", json={"reason": "wrong rates"})
    deliver_admin_commands(runtime)
    accepted = api.post(f"/files/{file['file_id']}/reverse", json={"reason": "wrong file"})
    assert accepted.status_code == 202
    [command] = deliver_admin_commands(runtime)
    validate_event(command.to_dict())
    shown = api.get(f"/files/{file['file_id']}").json()
    assert shown["status"] == "reversed" and shown["reversal"]["reason"] == "wrong file"
    assert api.post(f"/files/{file['file_id']}/reverse", json={"reason": "again"}).json()["already"] is True


def test_cdrflow_invoices_list_show_pdf_csv_and_credit(cli, runtime, tmp_path):
    listed = cli("invoices", "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert [i["invoice_number"] for i in orjson.loads(listed.output)] == ["INV-000001"]
    assert "INV-000001" in cli("invoices", "list").output
    shown = cli("invoices", "show", "INV-000001")
    assert shown.exit_code == 0, shown.output
    assert "Call Charges" in shown.output and "0.38 GBP" in shown.output
    assert orjson.loads(cli("invoices", "show", "INV-000001", "--json").output)["total"] == "0.38"

    pdf = tmp_path / "out.pdf"
    written = cli("invoices", "pdf", "INV-000001", "-o", str(pdf), "--json")
    assert written.exit_code == 0, written.output
    assert orjson.loads(written.output)["bytes"] == pdf.stat().st_size
    assert "INV-000001" in PdfReader(pdf).pages[0].extract_text()
    csv = tmp_path / "calls.csv"
    assert cli("invoices", "csv", "INV-000001", "-o", str(csv)).exit_code == 0
    assert csv.read_text().startswith("Date,Time,CLI")

    credited = cli("invoices", "credit", "INV-000001", "--reason", "wrong rates", "--operator", "sam", "--json")
    assert credited.exit_code == 0, credited.output
    assert orjson.loads(credited.output)["command"] == "credit"
    deliver_admin_commands(runtime)
    assert "credited by CN-000001" in cli("invoices", "show", "INV-000001").output
    again = cli("invoices", "credit", "INV-000001", "--reason", "again")
    assert again.exit_code == 1 and "by credit note CN-000001" in again.output
    assert cli("invoices", "pdf", "INV-999999", "-o", str(pdf)).exit_code == 1


def test_cdrflow_files_reverse_says_to_credit_the_invoice_first(cli, api):
    [file_id] = [f["file_id"] for f in api.get("/files").json() if f["original_name"] == "btw-cdr-20261002.csv"]
    refused = cli("files", "reverse", file_id, "--reason", "wrong file", "--json")
    assert refused.exit_code == 1 and "credit invoice INV-000001 first" in refused.output
    assert cli("files", "reverse", file_id).exit_code == 2  # --reason is required
