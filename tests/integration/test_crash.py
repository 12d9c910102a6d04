"""kill -9 the rater in the middle of a file; the restart ends with the same calls and invoice
as a clean run: nothing duplicated, nothing missing."""

from __future__ import annotations

import signal
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select

from cdrflow.client import AdminClient
from cdrflow.db.models import Call
from cdrflow.filestore import FileStore
from cdrflow_app.orchestrate import spawn_service
from services.invoicer.tax import call_charges_line, totals
from services.parser.api import parse_file
from services.rater.engine import rate_calls
from services.rater.reference import load_plan
from tests.integration.conftest import wait_until

ROWS = 60_000


def write_big_file(path) -> None:
    """ROWS calls of ACME's to UK landlines and mobiles, over five days of peak, offpeak and weekend."""
    start = datetime(2026, 10, 2, 8, 0, 0)
    with path.open("w") as fh:
        fh.write("cli,dialled,start,duration\n")
        for n in range(ROWS):
            dialled = f"07700900{n % 1000:03d}" if n % 3 == 0 else f"01174960{n % 1000:03d}"
            fh.write(f"+44163296000{1 + n % 2},{dialled},{(start + timedelta(seconds=n * 7)).isoformat()},"
                     f"{1 + (n * 37) % 900}\n")


def clean_run_total(path, settings, database) -> Decimal:
    """What the file must bill: the same engine and reference data, straight from the file; the
    calls' exact sum rounded once to the penny, plus 20% VAT rounded once (one Call Charges line)."""
    with database.transaction() as session:
        plan = load_plan(session, FileStore(settings.file_store_dir), settings.zone)
    total = 0
    for batch in parse_file(path, "generic-cdr", zone=settings.zone):
        total += rate_calls(batch.records, plan, carrier="gamma", direction="outbound")["charge"].sum()
    return Decimal(totals([call_charges_line(1, int(total))]).total_minor).scaleb(-2)


def stored_calls(database) -> tuple[int, int]:
    with database.transaction() as session:
        return session.execute(select(func.count(), func.count(func.distinct(Call.row)))).one()


def test_rater_killed_mid_file_restarts_to_the_clean_run_result(settings, running, database, tmp_path):
    write_big_file(tmp_path / "big.csv")
    expected_total = clean_run_total(tmp_path / "big.csv", settings, database)
    client = AdminClient.for_settings(settings)
    file_id = client.upload(tmp_path / "big.csv", carrier="gamma", kind="cdr", period="daily",
                            direction="outbound")["file_id"]

    wait_until("some calls stored", lambda: stored_calls(database)[0] > 0, timeout=120)
    running["rater"].send_signal(signal.SIGKILL)
    running["rater"].wait()
    stored_at_kill = stored_calls(database)[0]
    assert 0 < stored_at_kill < ROWS, "the rater must die in the middle of the file"

    running["rater"] = spawn_service("rater", settings, log_dir=str(tmp_path))
    wait_until("file rated", lambda: client.file(file_id)["status"] == "rated", timeout=240)

    total, distinct_rows = stored_calls(database)
    assert (total, distinct_rows) == (ROWS, ROWS)
    client.close_run("ACME", "2026-10")
    [invoice] = wait_until("invoice", lambda: client.invoices(), timeout=60)
    assert Decimal(invoice["total"]) == expected_total
    assert invoice["charges"][0]["quantity"] == ROWS
