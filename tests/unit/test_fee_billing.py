"""Fixed-fee (SDR) files become billing transactions when the rater handles their summary: matched
to a customer by the same CLI matching as calls, priced by the tariff's newest fee sheet, or sent
to reconciliation with the reason; an information-only carrier's fees are kept, never billed.
Handlers driven directly over SQLite, as in test_handlers.py, on the repository's SDR sample."""

import csv
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from starlette.testclient import TestClient

from cdrflow.db.models import BillingTransaction, CarrierFormat, CarrierTransaction, File
from cdrflow.events import EventType
from cdrflow.intake import FileMetadata, file_arrived
from services.admin.app import create_app
from services.admin.files_api import show_file
from services.dedupe.service import Dedupe
from services.parser.service import Parser
from services.rater.feesheet import FeeSheetError
from services.rater.fees import load_fee_sheet, set_sdr_for_billing
from services.rater.recon import fee_reconciliation
from services.rater.reference import add_cli
from services.rater.service import Rater
from tests.unit.test_handlers import handle, runtime  # noqa: F401  (the fixture: sample reference data)
from tests.authhelp import authed

SDR = Path(__file__).parents[1] / "fixtures" / "formats" / "generic-sdr-202610.csv"
SHEET = b"""event_type,reference,description,rule,price,markup,cost,per,effective_from
Rental,,Line rental*,fixed,15.00,,,month,
,FEATURE-CB,,passthrough,,,,,
Connection,,,markup,,20,,once,
"""
"""Line rental at 15.00 a month, the call-barring feature at cost, connections at cost + 20 %;
the SIP trunk rental matches no row (unpriced)."""


def sample_rows() -> dict[int, dict[str, str]]:
    """The SDR sample's good rows by line number, as the file writes them."""
    with SDR.open(newline="") as fh:
        return {n: row for n, row in enumerate(csv.DictReader(fh), start=2) if row["reference"] and n != 7}


def four_places(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


@pytest.fixture
def sdr_runtime(runtime):  # noqa: F811
    with runtime.database.transaction() as session:
        session.add(CarrierFormat(carrier="gamma", kind="sdr", format="generic-sdr"))
    return runtime


def load_sheet(runtime, content=SHEET, tariff="business"):
    with runtime.database.transaction() as session:
        return load_fee_sheet(session, runtime.store, tariff, content, source_name="fees.csv").version


def through_rater(runtime, carrier="gamma"):
    """The SDR sample through dedupe, parser and rater; returns the file id and the rater's events."""
    stored = runtime.store.put_bytes(SDR.read_bytes())
    arrived = file_arrived(stored, FileMetadata(carrier, "sdr", "monthly", "outbound", SDR.name, "upload"), "cdrflow/admin")
    [accepted] = handle(runtime, Dedupe(runtime).on_file_arrived, arrived)
    assert accepted.type == EventType.FILE_ACCEPTED
    [summary] = handle(runtime, Parser(runtime).on_file_accepted, accepted)
    rater = Rater(runtime)
    rated = handle(runtime, rater.on_record_parsed, summary)
    return accepted.data["file_id"], summary, rater, rated


def fees_by_row(runtime, file_id):
    with runtime.database.transaction() as session:
        return {t.row: (b.status, b.customer, b.price, b.cost, b.reason) for b, t in session.execute(
            select(BillingTransaction, CarrierTransaction)
            .join(CarrierTransaction, CarrierTransaction.id == BillingTransaction.carrier_transaction_id)
            .where(BillingTransaction.file_id == file_id))}


def test_a_billing_carriers_sdr_file_gives_priced_unmatched_and_unpriced_fees_with_exact_prices(sdr_runtime):
    load_sheet(sdr_runtime)
    file_id, _, _, [passed_on] = through_rater(sdr_runtime)
    assert (passed_on.type, passed_on.data["part"]) == (EventType.CALL_RATED, "summary")
    rows = sample_rows()
    fees = fees_by_row(sdr_runtime, file_id)
    assert set(fees) == set(rows) == {2, 3, 4, 5}
    # line 2: +441632960001 is ACME's DDI; Line rental, fixed 15.00 × quantity 1, not pro rata
    line_rental = rows[2]
    assert fees[2] == ("priced", "ACME", four_places(Decimal("15.00") * int(line_rental["quantity"])),
                       Decimal(line_rental["amount"]), None)
    # line 3: ACME's DDI, but no row of the sheet prices a SIP trunk rental
    status, customer, price, cost, reason = fees[3]
    assert (status, customer, price, cost) == ("unpriced", "ACME", None, Decimal(rows[3]["amount"]))
    assert "no row of fee sheet fees.csv matches event type 'Rental'" in reason
    # line 4: a feature code, account ACME, which no customer holds as an account code yet
    status, customer, price, cost, reason = fees[4]
    assert (status, customer, cost) == ("unmatched", None, Decimal(rows[4]["amount"]))
    assert reason.startswith("no customer has code FEATURE-CB or account code ACME for carrier gamma on 2026-10-15")
    # line 5: +441632960003 is nobody's
    assert fees[5][:2] == ("unmatched", None) and "number 441632960003" in fees[5][4]
    with sdr_runtime.database.transaction() as session:
        file = session.get(File, file_id)
        assert file.status_reason == "1 fee(s) priced, 2 unmatched, 1 unpriced; 2 row(s) rejected"
        [rental] = session.scalars(select(BillingTransaction).where(BillingTransaction.status == "priced")).all()
        assert (rental.charge_on, rental.quantity, rental.description) == (date(2026, 10, 1), 1, "Line rental")


def test_an_information_only_carriers_fees_are_kept_never_billed_and_the_file_says_so(sdr_runtime):
    load_sheet(sdr_runtime)
    with sdr_runtime.database.transaction() as session:
        set_sdr_for_billing(session, "gamma", False)
    file_id, *_ = through_rater(sdr_runtime)
    fees = fees_by_row(sdr_runtime, file_id)
    assert {row: fee[0] for row, fee in fees.items()} == {2: "information", 3: "information", 4: "information",
                                                          5: "information"}
    assert all(fee[2] is None for fee in fees.values())  # never priced
    assert fees[2][1] == "ACME"  # shown with the customer it belongs to
    with sdr_runtime.database.transaction() as session:
        file = session.get(File, file_id)
        assert file.status == "information"
        assert file.status_reason == "4 fee(s) for information only (not billed); 2 row(s) rejected"
        assert fee_reconciliation(session) == []  # nothing to fix: they are not for billing
    # The operator turns the carrier's files to billing: the fees not invoiced are matched again.
    rater = Rater(sdr_runtime)
    rater.rerate_reconciliation()
    with sdr_runtime.database.transaction() as session:
        set_sdr_for_billing(session, "gamma", True)
    rater.rerate_reconciliation()
    assert {row: fee[0] for row, fee in fees_by_row(sdr_runtime, file_id).items()} == {
        2: "priced", 3: "unpriced", 4: "unmatched", 5: "unmatched"}
    with sdr_runtime.database.transaction() as session:
        assert session.get(File, file_id).status == "rated"


def test_a_repeated_summary_adds_nothing_and_changes_nothing(sdr_runtime):
    load_sheet(sdr_runtime)
    file_id, summary, rater, _ = through_rater(sdr_runtime)
    before = fees_by_row(sdr_runtime, file_id)
    again = handle(sdr_runtime, rater.on_record_parsed, summary)
    assert [e.id for e in again] and again[0].data["part"] == "summary"
    with sdr_runtime.database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(BillingTransaction)) == 4
        assert session.get(File, file_id).status_reason.startswith("1 fee(s) priced, 2 unmatched, 1 unpriced")
    assert fees_by_row(sdr_runtime, file_id) == before


def test_adding_the_missing_cli_and_fee_sheet_row_matches_and_prices_the_fees_by_themselves(sdr_runtime):
    load_sheet(sdr_runtime)
    file_id, _, rater, _ = through_rater(sdr_runtime)
    rater.rerate_reconciliation()  # the first pass at this reference version: nothing to change
    with sdr_runtime.database.transaction() as session:
        add_cli(session, "ACME", "ACME", kind="account")
        add_cli(session, "BRISDENT", "+441632960003")
    rater.rerate_reconciliation()
    rows, fees = sample_rows(), fees_by_row(sdr_runtime, file_id)
    assert fees[4][:4] == ("priced", "ACME", four_places(Decimal(rows[4]["amount"])), Decimal(rows[4]["amount"]))
    assert fees[5][:4] == ("priced", "BRISDENT", four_places(Decimal(rows[5]["amount"]) * Decimal("1.20")),
                           Decimal(rows[5]["amount"]))
    assert fees[3][0] == "unpriced"
    load_sheet(sdr_runtime, SHEET + b"Rental,,SIP trunk*,fixed,2.50,,,month,\n")  # version 2: the trunk's row
    rater.rerate_reconciliation()
    fees = fees_by_row(sdr_runtime, file_id)
    assert fees[3][:3] == ("priced", "ACME", four_places(Decimal("2.50") * int(rows[3]["quantity"])))
    with sdr_runtime.database.transaction() as session:
        assert session.get(File, file_id).status_reason.startswith("4 fee(s) priced, 0 unmatched, 0 unpriced")
        assert fee_reconciliation(session) == []


def test_a_fee_on_an_invoice_is_never_matched_again(sdr_runtime):
    file_id, _, rater, _ = through_rater(sdr_runtime)  # no fee sheet yet: ACME's fees are unpriced
    with sdr_runtime.database.transaction() as session:
        [held] = session.scalars(select(BillingTransaction).join(
            CarrierTransaction, CarrierTransaction.id == BillingTransaction.carrier_transaction_id)
            .where(CarrierTransaction.row == 2)).all()  # the line rental, which the sheet prices
        held.invoice_id, kept = 99, held.carrier_transaction_id
    load_sheet(sdr_runtime)
    rater.rerate_reconciliation()
    with sdr_runtime.database.transaction() as session:
        assert session.get(BillingTransaction, kept).status == "unpriced"
    assert fees_by_row(sdr_runtime, file_id)[4][0] == "unmatched"  # still looked at, and still nobody's
    with sdr_runtime.database.transaction() as session:
        add_cli(session, "ACME", "ACME", kind="account")
    rater.rerate_reconciliation()
    fees = fees_by_row(sdr_runtime, file_id)
    assert (fees[2][0], fees[4][0]) == ("unpriced", "priced")  # the invoiced one is left as it was


def test_recon_lists_unmatched_and_unpriced_fees_by_reference_with_count_and_cost(sdr_runtime):
    load_sheet(sdr_runtime)
    through_rater(sdr_runtime)
    rows = sample_rows()
    with sdr_runtime.database.transaction() as session:
        groups = {(g.status, g.reference, g.carrier, g.fees, g.cost) for g in fee_reconciliation(session)}
    assert groups == {("unmatched", "FEATURE-CB", "gamma", 1, Decimal(rows[4]["amount"])),
                      ("unmatched", "+441632960003", "gamma", 1, Decimal(rows[5]["amount"])),
                      ("unpriced", "+441632960002", "gamma", 1, Decimal(rows[3]["amount"]))}
    with authed(TestClient(create_app(sdr_runtime)), sdr_runtime) as client:
        recon = client.get("/recon").json()
    fee_groups = [g for g in recon if g["subject"] == "fee"]
    assert {(g["status"], g["key"], g["fees"], Decimal(g["cost"])) for g in fee_groups} == {
        ("unmatched", "FEATURE-CB", 1, Decimal("-0.375")), ("unmatched", "+441632960003", 1, Decimal("99.99")),
        ("unpriced", "+441632960002", 1, Decimal("2"))}
    result = CliRunner().invoke(cli_main(), ["recon"], obj=None, env=env_of(sdr_runtime))
    assert result.exit_code == 0, result.output
    assert "FEATURE-CB" in result.output and "unpriced" in result.output


def test_files_show_lists_an_sdr_files_fees_with_customer_price_or_reason(sdr_runtime):
    load_sheet(sdr_runtime)
    file_id, *_ = through_rater(sdr_runtime)
    with sdr_runtime.database.transaction() as session:
        view = show_file(session, file_id, sdr_runtime)
    assert view["fees_total"] == 4
    assert view["fee_counts"] == {"priced": 1, "unmatched": 2, "unpriced": 1, "information": 0}
    first = view["fees"][0]
    assert (first["row"], first["status"], first["customer"], Decimal(first["price"]), Decimal(first["cost"])) == \
        (2, "priced", "ACME", Decimal("15"), Decimal("12.5"))
    assert view["fees"][2]["reason"].startswith("no customer has code FEATURE-CB")


def test_a_fee_sheet_with_errors_is_refused_with_every_problem_and_its_line(sdr_runtime):
    bad = b"event_type,description,rule,price\nRental,Line*,fix,15.00\nRental,Other,fixed,\nCease,,fixed,1e-3\n"
    with pytest.raises(FeeSheetError) as refused, sdr_runtime.database.transaction() as session:
        load_fee_sheet(session, sdr_runtime.store, "business", bad, source_name="bad.csv")
    assert refused.value.problems == [
        "line 2: rule 'fix' is not fixed, markup or passthrough",
        "line 3: rule fixed needs a price",
        "line 4: price '1e-3' is not an amount (digits and a decimal point, e.g. 12.50)"]
    result = CliRunner().invoke(cli_main(), ["fees", "load", "business", str(write(sdr_runtime, bad)), "--json"],
                                env=env_of(sdr_runtime))
    assert result.exit_code == 1 and '"line 3: rule fixed needs a price"' in result.output
    with authed(TestClient(create_app(sdr_runtime)), sdr_runtime) as client:
        over_api = client.post("/fee-sheets?tariff=business&name=bad.csv", content=bad)
        assert over_api.status_code == 422 and len(over_api.json()["problems"]) == 3
        assert client.get("/fee-sheets").json() == []  # nothing loaded


def test_fee_sheets_load_as_new_versions_and_list_and_show(sdr_runtime):
    runner, env, path = CliRunner(), env_of(sdr_runtime), write(sdr_runtime, SHEET)
    first = runner.invoke(cli_main(), ["fees", "load", "business", str(path)], env=env)
    assert first.exit_code == 0 and "version 1 active, 3 rows" in first.output
    with authed(TestClient(create_app(sdr_runtime)), sdr_runtime) as client:
        loaded = client.post("/fee-sheets?tariff=business&name=v2.csv", content=SHEET)
        assert loaded.status_code == 201 and loaded.json()["version"] == 2
        assert [(v["version"], v["active"]) for v in client.get("/fee-sheets").json()] == [(1, False), (2, True)]
        shown = client.get("/fee-sheets/business").json()
        assert (shown["version"], len(shown["sheet_rows"])) == (2, 3)
        assert {k: shown["sheet_rows"][0][k] for k in ("line", "event_type", "description", "rule", "price", "per")} \
            == {"line": 2, "event_type": "rental", "description": "line rental*", "rule": "fixed", "price": "15.00",
                "per": "month"}
        assert client.get("/fee-sheets/nope").status_code == 404
        unknown = client.post("/fee-sheets?tariff=gold", content=SHEET)
        assert unknown.status_code == 422 and "no tariff 'gold'" in unknown.json()["error"]
        rule = client.put("/carriers/gamma/rules", json={"sdr": "information"})
        assert rule.json() == {"carrier": "gamma", "hold_same_name": False, "sdr": "information"}
        assert client.put("/carriers/gamma/rules", json={"sdr": "maybe"}).status_code == 422
        assert client.put("/carriers/gamma/rules", json={"sdr": {"a": 1}}).status_code == 422  # not a word: 422, not 500
    listed = runner.invoke(cli_main(), ["fees", "list", "--json"], env=env)
    assert '"version": 2' in listed.output
    show = runner.invoke(cli_main(), ["fees", "show", "business", "--version", "1"], env=env)
    assert show.exit_code == 0 and "passthrough" in show.output
    rules = runner.invoke(cli_main(), ["carriers", "rules", "gamma", "--sdr", "billing", "--json"], env=env)
    assert rules.exit_code == 0 and '"sdr":"billing"' in rules.output


def cli_main():
    from cdrflow_app.cli import main

    return main


def env_of(runtime):
    return {"CDRFLOW_DATA_DIR": str(runtime.settings.data_dir)}


def write(runtime, content: bytes) -> Path:
    path = runtime.settings.data_dir / "sheet.csv"
    path.write_bytes(content)
    return path
