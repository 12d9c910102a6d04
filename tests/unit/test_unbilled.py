"""What is not billed yet: ``GET /customers/{code}/calls``, ``GET /customers/{code}/unbilled``
(Starlette's TestClient, SQLite, no broker), ``cdrflow calls`` and ``cdrflow charges unbilled``
(CliRunner through the admin client). Calls are stored through the calls ledger, invoices are
issued by the invoicer's own run-closed handler; every expected figure is worked out by hand."""

from datetime import UTC, date, datetime
from decimal import Decimal

import orjson
import polars as pl
import pytest
from click.testing import CliRunner
from sqlalchemy import select, update
from starlette.testclient import TestClient

import services.admin.app
import services.invoicer.calls_commands
from cdrflow_app.cli import main
from cdrflow.db import migrate
from cdrflow.db.models import BillingTransaction, Call, Carrier, CarrierTransaction, Customer, CustomerCharge, File, Invoice
from cdrflow.runtime import Runtime
from cdrflow.settings import Settings
from services.admin.app import create_app
from services.invoicer.calls_commands import UnbilledClient
from services.invoicer.ledger import CALL_COLUMNS, store_calls
from services.invoicer.periods import Period
from services.invoicer.service import Invoicer
from services.scheduler.runs import close_run, run_closed_event
from tests.schemas import validate_event
from tests.unit.test_dlq_api import RecordingProducer
from tests.authhelp import authed

OCTOBER = Period(date(2026, 10, 1), date(2026, 11, 1))
LONG_NAME = "United Kingdom - Mobile - Vodafone Personal Numbering Service (premium)"


def utc(*args):
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def runtime(tmp_path):
    settings = Settings(data_dir=tmp_path, seller_name="Acme Telecom Ltd", seller_address="1 High St|Leeds")
    migrate(settings.effective_database_url)
    rt = Runtime(settings, "test")
    rt.__dict__["producer"] = RecordingProducer()
    now = datetime.now(UTC)
    with rt.database.transaction() as session:
        session.add(Carrier(code="gamma", name="Gamma"))
        for file_id, status in (("f-rated", "rated"), ("f-storing", "parsed")):
            session.add(File(id=file_id, fingerprint=file_id.ljust(64, "0"), carrier="gamma", kind="cdr",
                             period="daily", direction="outbound", original_name=f"{file_id}.csv", size=1,
                             channel="upload", received_at=now, status=status, updated_at=now))
        session.add(Customer(code="ACME", name="Acme Ltd", billing_schedule="monthly", billing_starts=date(2026, 10, 1)))
        session.add(Customer(code="OTHER", name="Other Ltd", billing_schedule="monthly"))
    yield rt
    rt.database.dispose()


@pytest.fixture
def api(runtime, monkeypatch):
    monkeypatch.setattr(services.admin.app, "ANNOUNCE_WAIT_S", 0)
    client = authed(TestClient(create_app(runtime)), runtime)  # not entered: no lifespan, no background relay
    yield client
    client.close()


@pytest.fixture
def cli(api, monkeypatch):
    client = UnbilledClient("http://testserver")
    client._http = api  # Starlette's TestClient is an httpx.Client
    monkeypatch.setattr(services.invoicer.calls_commands, "_client", lambda ctx: client)
    return lambda *args: CliRunner().invoke(main, list(args))


_rows = iter(range(1, 1_000_000))


def store(rt, *calls):
    """Store calls through the calls ledger, as the invoicer does: each a dict of the columns
    that differ from a rated call of ACME in f-rated; ``charge`` as decimal text."""
    rows = []
    for call in calls:
        row = {"file_id": "f-rated", "row": next(_rows), "carrier": "gamma", "direction": "outbound",
               "cli": "441130000001", "dialled": "442070000000", "start": utc(2026, 10, 10, 12), "duration": 61,
               "answered": True, "charge_code": None, "account_code": None, "cdr_cost": None, "customer": "ACME",
               "tariff": "retail", "code": "44", "destination": "UK", "band": "peak", "billable_seconds": 120,
               "charge": "0.010000", "cost": None, "status": "rated", "reason": None} | call
        row["charge"] = None if row["charge"] is None else int(Decimal(row["charge"]) * 1_000_000)
        row["dialled"] = f"4420{row['row']:08d}"  # every call its own usage: none overlaps another
        rows.append(row)
    with rt.database.transaction() as session:
        store_calls(session, pl.DataFrame(rows, schema=CALL_COLUMNS), overlap_policy_of=lambda _: "skip")


def bill(rt, customer, period=OCTOBER):
    """Close the run as an operator does (``runs.close_run``), then let the invoicer issue it."""
    with rt.database.transaction() as session:
        run = close_run(session, customer=customer, period=period, closed_by="sam", reason=None, source="test",
                        publisher="admin", namespace=rt.settings.namespace, zone=rt.settings.zone,
                        now=utc(2026, 11, 5))
    event = run_closed_event(run.run_id, customer, period, "sam", None, "cdrflow/admin")
    validate_event(event.to_dict())
    with rt.database.transaction() as session:
        assert list(Invoicer(rt).on_run_closed(event, session)) == []
        return session.scalar(select(Invoice.number).where(Invoice.customer == customer,
                                                           Invoice.period_start == period.start))


def calls_of(api, customer="ACME", **params):
    reply = api.get(f"/customers/{customer}/calls", params=params)
    assert reply.status_code == 200, reply.text
    return reply.json()


# --- totals ------------------------------------------------------------------------------------


def test_unbilled_total_is_the_exact_sum_rounded_once_to_the_penny(api, runtime):
    store(runtime, {"charge": "0.123450"}, {"charge": "0.000050"}, {"charge": "1.004999"})
    reply = calls_of(api)
    # 0.123450 + 0.000050 + 1.004999 = 1.128499, rounded once, half up: 1.13 (each first: 1.12)
    assert reply["unbilled"] == {"calls": 3, "charge": "1.13", "charge_micros": 1128499, "in_unrated_files": 0}
    assert list(reply)[:3] == ["customer", "currency", "unbilled"]  # the totals come first
    assert [c["charge"] for c in reply["calls"]] == ["0.123450", "0.000050", "1.004999"]


def test_calls_of_a_file_not_rated_yet_are_unbilled_but_counted_apart_and_a_run_leaves_them(api, runtime):
    store(runtime, {"charge": "2.000000"}, {"charge": "0.500000", "file_id": "f-storing"})
    assert calls_of(api)["unbilled"] == {"calls": 2, "charge": "2.50", "charge_micros": 2_500_000,
                                         "in_unrated_files": 1}
    number = bill(runtime, "ACME")
    reply = calls_of(api)
    assert reply["unbilled"] == {"calls": 1, "charge": "0.50", "charge_micros": 500_000, "in_unrated_files": 1}
    assert [(c["file_id"], c["invoice_number"]) for c in reply["calls"]] == [("f-rated", number), ("f-storing", None)]


def test_set_aside_unrated_and_other_customers_calls_are_not_unbilled(api, runtime):
    store(runtime, {"charge": "1.000000"}, {"charge": "9.000000", "customer": "OTHER"},
          {"charge": None, "status": "unrated", "reason": "no rate for 44"}, {"charge": "4.000000"})
    with runtime.database.transaction() as session:  # an overlapping call kept out of billing
        session.execute(update(Call).where(Call.charge == Decimal(4)).values(set_aside=True))
    reply = calls_of(api)
    assert reply["unbilled"]["calls"] == 1 and reply["unbilled"]["charge_micros"] == 1_000_000
    assert [(c["status"], c["set_aside"]) for c in reply["calls"]] == [("rated", False), ("unrated", False),
                                                                        ("rated", True)]
    assert [c["charge"] for c in calls_of(api, unbilled="true")["calls"]] == ["1.000000"]


# --- days in the operator's zone ----------------------------------------------------------------

# 25 October 2026: London's clocks go back at 02:00 BST to 01:00 GMT; the day lasts 25 hours,
# from 2026-10-24T23:00Z to 2026-10-26T00:00Z.
AROUND_THE_CHANGE = [utc(2026, 10, 24, 22, 59, 59), utc(2026, 10, 24, 23), utc(2026, 10, 25, 0, 30),
                     utc(2026, 10, 25, 1, 30), utc(2026, 10, 25, 23, 59, 59), utc(2026, 10, 26)]


def test_a_day_is_a_local_day_of_25_hours_across_the_october_clock_change(api, runtime):
    store(runtime, *({"start": start, "charge": f"0.00000{n}"} for n, start in enumerate(AROUND_THE_CHANGE, 1)))
    reply = calls_of(api, **{"from": "2026-10-25", "to": "2026-10-25"})
    assert [c["start"] for c in reply["calls"]] == [
        "2026-10-25T00:00:00+01:00", "2026-10-25T01:30:00+01:00",  # 01:30 twice: once in BST,
        "2026-10-25T01:30:00+00:00", "2026-10-25T23:59:59+00:00"]  # once in GMT
    assert reply["unbilled"]["calls"] == 4 and reply["unbilled"]["charge_micros"] == 2 + 3 + 4 + 5
    assert (reply["from"], reply["to"], reply["to_inclusive"], reply["zone"]) == \
        ("2026-10-25", "2026-10-25", True, "Europe/London")
    assert [c["start"] for c in calls_of(api, to="2026-10-24")["calls"]] == ["2026-10-24T23:59:59+01:00"]
    assert [c["start"] for c in calls_of(api, **{"from": "2026-10-26"})["calls"]] == ["2026-10-26T00:00:00+00:00"]
    assert calls_of(api, **{"from": "2026-10-26"})["unbilled"]["charge_micros"] == 6


def test_calls_are_ordered_by_start_and_paged(api, runtime):
    store(runtime, *({"start": utc(2026, 10, 20 - n), "charge": "1.000000"} for n in range(5)))
    page = calls_of(api, limit="2", offset="1")
    assert [c["start"][:10] for c in page["calls"]] == ["2026-10-17", "2026-10-18"]
    assert (page["matched"], page["unbilled"]["calls"], page["unbilled"]["charge"]) == (5, 5, "5.00")


# --- invoiced calls -----------------------------------------------------------------------------


def test_invoiced_calls_show_their_invoice_number_and_leave_the_unbilled_view(api, runtime, cli):
    store(runtime, {"start": utc(2026, 10, 30, 9), "charge": "3.000000"})
    number = bill(runtime, "ACME")
    store(runtime, {"start": utc(2026, 11, 2, 9), "charge": "0.250000"})  # after the run: next invoice

    every = calls_of(api)
    assert [(c["start"][:10], c["invoice_number"]) for c in every["calls"]] == [("2026-10-30", number),
                                                                                ("2026-11-02", None)]
    assert number == "INV-000001"
    unbilled = calls_of(api, unbilled="true")
    assert [c["start"][:10] for c in unbilled["calls"]] == ["2026-11-02"]
    assert unbilled["unbilled"] == every["unbilled"] == {"calls": 1, "charge": "0.25", "charge_micros": 250_000,
                                                         "in_unrated_files": 0}

    shown = cli("calls", "--customer", "ACME")
    assert shown.exit_code == 0, shown.output
    assert shown.output.splitlines()[0] == "ACME unbilled: 1 call(s), 0.25 GBP (exact 0.250000)"
    assert number in shown.output
    assert number not in cli("calls", "--customer", "ACME", "--unbilled").output


# --- refused ------------------------------------------------------------------------------------


def test_an_unknown_customer_is_404(api):
    reply = api.get("/customers/NOPE/calls")
    assert reply.status_code == 404 and "unknown customer 'NOPE'" in reply.json()["error"]
    assert api.get("/customers/NOPE/unbilled").status_code == 404


@pytest.mark.parametrize(("params", "message"), [
    ({"from": "2026-13-01"}, "'from' '2026-13-01' is not a day YYYY-MM-DD"),
    ({"to": "25/10/2026"}, "'to' '25/10/2026' is not a day YYYY-MM-DD"),
    ({"from": "2026-10-26", "to": "2026-10-25"}, "'to' 2026-10-25 is before 'from' 2026-10-26"),
    ({"unbilled": "maybe"}, "'unbilled' 'maybe' is not true or false"),
    ({"limit": "0"}, "'limit' '0' is not a whole number 1 to 10000"),
    ({"offset": "-1"}, "'offset' '-1' is not a whole number at least 0"),
])
def test_a_bad_day_or_parameter_is_400_saying_which(api, params, message):
    reply = api.get("/customers/ACME/calls", params=params)
    assert reply.status_code == 400
    assert reply.json()["error"].startswith(message)


def test_cdrflow_calls_reports_a_bad_day_and_an_unknown_customer(cli):
    bad = cli("calls", "--customer", "ACME", "--from", "2026-02-30")
    assert bad.exit_code == 1 and "'from' '2026-02-30' is not a day YYYY-MM-DD" in bad.output
    assert "(HTTP 400)" in bad.output
    unknown = cli("calls", "--customer", "NOPE")
    assert unknown.exit_code == 1 and "unknown customer 'NOPE'" in unknown.output and "(HTTP 404)" in unknown.output


# --- cdrflow calls ------------------------------------------------------------------------------


def test_cdrflow_calls_prints_the_total_then_a_table_a_long_destination_does_not_break(cli, runtime):
    store(runtime, {"start": utc(2026, 10, 25, 0, 30), "charge": "0.123450", "destination": LONG_NAME},
          {"start": utc(2026, 10, 25, 1, 30), "charge": "0.000050"},
          {"start": utc(2026, 10, 25, 2), "charge": "1.004999", "file_id": "f-storing"})
    shown = cli("calls", "--customer", "ACME", "--from", "2026-10-25", "--to", "2026-10-25")
    assert shown.exit_code == 0, shown.output
    header, columns, *rows = shown.output.splitlines()
    assert header == ("ACME unbilled from 2026-10-25 to 2026-10-25 (included): 3 call(s), 1.13 GBP "
                      "(exact 1.128499); 1 of them in files not rated yet, which a run does not bill yet")
    assert columns.split() == ["start", "CLI", "dialled", "destination", "band", "duration", "billable", "charge",
                               "status", "invoice", "file"]
    assert len(rows) == 3 and LONG_NAME in rows[0]
    band = columns.index("band")  # every column after the long name starts where its header does
    assert [r[band:band + 4] for r in rows] == ["peak"] * 3
    file_column = columns.index("file")
    assert [r[file_column:] for r in rows] == ["f-rated", "f-rated", "f-storing"]
    assert [r[:25] for r in rows] == ["2026-10-25T01:30:00+01:00", "2026-10-25T01:30:00+00:00",
                                      "2026-10-25T02:00:00+00:00"]


def test_cdrflow_calls_json_parses_and_limit_says_how_to_see_more(cli, runtime):
    store(runtime, *({"start": utc(2026, 10, 1 + n), "charge": "0.100000"} for n in range(3)))
    data = orjson.loads(cli("calls", "--customer", "ACME", "--unbilled", "--json").output)
    assert data["unbilled"]["charge_micros"] == 300_000 and len(data["calls"]) == 3 and data["unbilled_only"]
    assert cli("calls", "--customer", "ACME", "--limit", "2").output.splitlines()[-1] == \
        "calls 1-2 of 3: --offset 2 shows the next"
    assert cli("calls", "--customer", "OTHER").output == "OTHER unbilled: 0 call(s), 0.00 GBP (exact 0.000000)\n" \
                                                         "no calls\n"


# --- charges and fixed fees ------------------------------------------------------------------------


def add_charge(rt, description, amount, frequency, start, quantity=1):
    with rt.database.transaction() as session:
        session.add(CustomerCharge(customer="ACME", description=description, amount=Decimal(amount),
                                   quantity=quantity, frequency=frequency, start=start,
                                   created_at=datetime.now(UTC), created_by="test"))


def add_fee(rt, price, charge_on, description="Line rental", file_id="f-rated"):
    with rt.database.transaction() as session:
        t = CarrierTransaction(file_id=file_id, row=next(_rows), carrier="gamma", quantity=1, pro_rata=False,
                               amount=Decimal("1.00"))
        session.add(t)
        session.flush()
        session.add(BillingTransaction(carrier_transaction_id=t.id, file_id=file_id, customer="ACME",
                                       status="priced", description=description, quantity=1, price=Decimal(price),
                                       charge_on=charge_on, updated_at=datetime.now(UTC)))


@pytest.fixture
def charges(runtime):
    add_charge(runtime, "Hosted PBX", "10.00", "monthly", date(2026, 10, 1), quantity=2)
    add_charge(runtime, "Installation", "49.995", "once", date(2026, 10, 5))
    add_charge(runtime, "Handset", "7.50", "once", date(2027, 2, 1))
    add_fee(runtime, "12.635", date(2026, 10, 1))
    add_fee(runtime, "3.00", date(2026, 12, 1), description="Broadband")
    add_fee(runtime, "1.00", date(2026, 10, 1), description="Late file's fee", file_id="f-storing")


def test_unbilled_charges_total_first_and_what_the_next_run_bills(api, runtime, charges):
    reply = api.get("/customers/ACME/unbilled").json()
    assert list(reply)[:2] == ["customer", "total"]
    # Next run: October (billing starts 1 October, nothing closed). Hosted PBX 2 x 10.00, in advance:
    # October and November, 20.00 each; Installation 49.995 → 50.00; Line rental 12.635 → 12.64.
    # Later: Handset (February), Broadband (December), the fee of a file not rated yet.
    assert [(i["kind"], i["description"], i["amount"], i["next_run"]) for i in reply["items"]] == [
        ("recurring", "Hosted PBX 2026-10-01..2026-10-31", "20.00", True),
        ("recurring", "Hosted PBX 2026-11-01..2026-11-30", "20.00", True),
        ("one-off", "Installation", "50.00", True),
        ("one-off", "Handset", "7.50", False),
        ("fee", "Line rental", "12.64", True),
        ("fee", "Late file's fee", "1.00", False),
        ("fee", "Broadband", "3.00", False),
    ]
    assert reply["total"] == "114.14"  # 20 + 20 + 50 + 7.50 + 12.64 + 1 + 3
    assert reply["next_run"] == {"period": "2026-10", "period_start": "2026-10-01", "period_end": "2026-11-01",
                                 "total": "102.64"}  # 20 + 20 + 50 + 12.64


def test_the_next_run_bills_what_the_view_said_and_the_view_moves_on(api, runtime, charges):
    said = api.get("/customers/ACME/unbilled").json()["next_run"]["total"]
    bill(runtime, "ACME")
    with runtime.database.transaction() as session:
        invoice = session.scalar(select(Invoice).where(Invoice.customer == "ACME"))
        assert invoice.net == Decimal(said) == Decimal("102.64")
    after = api.get("/customers/ACME/unbilled").json()
    assert after["next_run"]["period"] == "2026-11"
    assert [(i["description"], i["amount"], i["next_run"]) for i in after["items"]] == [
        ("Hosted PBX 2026-12-01..2026-12-31", "20.00", True), ("Handset", "7.50", False),
        ("Late file's fee", "1.00", False), ("Broadband", "3.00", False)]


def test_cdrflow_charges_unbilled(cli, runtime, charges):
    shown = cli("charges", "unbilled", "--customer", "ACME")
    assert shown.exit_code == 0, shown.output
    header, columns, *rows = shown.output.splitlines()
    assert header == "ACME unbilled charges: 114.14 GBP; the next run (2026-10) bills 102.64 GBP of them"
    assert columns.split() == ["kind", "description", "qty", "amount", "next", "run", "id"]
    assert len(rows) == 7 and rows[3].split()[:2] == ["one-off", "Handset"] and "later" in rows[3]
    data = orjson.loads(cli("charges", "unbilled", "--customer", "ACME", "--json").output)
    assert data["total"] == "114.14"
    empty = cli("charges", "unbilled", "--customer", "OTHER")
    assert empty.exit_code == 0, empty.output
    assert empty.output.endswith("no charges or fixed fees unbilled\n")
