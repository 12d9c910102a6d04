"""The rating engine inside the rater service: rated calls stored with their rating, and calls in
reconciliation re-rated by themselves once the missing reference data is added."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select

from cdrflow.client import AdminClient
from cdrflow.db.models import Call
from cdrflow_app.demo import SAMPLES
from services.rater.recon import reconciliation
from services.rater.reference import add_cli, load_rate_sheet
from cdrflow.filestore import FileStore
from tests.integration.conftest import wait_until


def calls_by_row(database, file_id: str) -> dict[int, Call]:
    with database.transaction() as session:
        return {c.row: c for c in session.scalars(select(Call).where(Call.file_id == file_id))}


def test_calls_carry_their_rating_and_reconciliation_is_rerated_after_a_fix(settings, running, database, tmp_path):
    client = AdminClient.for_settings(settings)
    cdr = tmp_path / "gamma-extra.csv"
    cdr.write_text("cli,dialled,start,duration,cost\n"
                   "+441632960001,01174960123,2026-10-06T10:00:00,60,\n"          # rated, cost from wholesale
                   "+441999000000,01174960123,2026-10-06T10:05:00,120,0.0100\n"   # unknown CLI
                   "+441632960001,+81312345678,2026-10-06T10:10:00,60,\n")        # Japan: no rate
    file_id = client.upload(cdr, carrier="gamma", kind="cdr", period="daily", direction="outbound")["file_id"]
    wait_until("file rated", lambda: any(f["file_id"] == file_id and f["status"] == "rated" for f in client.files()))

    calls = calls_by_row(database, file_id)
    assert (calls[2].status, calls[2].customer, calls[2].code, calls[2].band, calls[2].charge, calls[2].cost) == (
        "rated", "ACME", "44", "peak", Decimal("0.015"), Decimal("0.006"))
    assert (calls[3].status, calls[3].reason) == ("unmatched", "no customer has CLI 441999000000")
    assert (calls[4].status, calls[4].reason) == ("unrated", "no rate for 81312345678 in tariff business (outbound)")
    with database.transaction() as session:
        assert {(g.status, g.key, g.calls) for g in reconciliation(session)} == {
            ("unmatched", "441999000000", 1), ("unrated", "business: 81312…", 1)}

    with database.transaction() as session:  # the operator fixes the reference data
        add_cli(session, "ACME", "+441999000000")
        load_rate_sheet(session, FileStore(settings.file_store_dir),
                        (SAMPLES / "rates-business.csv").read_bytes() + b"81,Japan,0.2000,0.2000,0.2000,0,0,1/1\n",
                        source_name="rates-business-v2.csv", kind="retail", owner="business", direction="outbound")

    wait_until("reconciliation re-rated", lambda: all(
        c.status == "rated" for c in calls_by_row(database, file_id).values()), timeout=60)
    calls = calls_by_row(database, file_id)
    assert (calls[3].customer, calls[3].charge, calls[3].cost) == ("ACME", Decimal("0.03"), Decimal("0.01"))
    assert (calls[4].code, calls[4].charge) == ("81", Decimal("0.2"))
    with database.transaction() as session:
        assert reconciliation(session) == []

    client.close_run("ACME", "2026-10")
    [invoice] = wait_until("invoice", lambda: client.invoices())
    assert Decimal(invoice["total"]) == Decimal("0.30")  # 0.015 + 0.03 + 0.2 = 0.245 → 0.25; VAT 0.05
