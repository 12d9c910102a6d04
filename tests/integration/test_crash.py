"""kill -9 the rater in the middle of a file; the restart ends with the same calls and invoice
as a clean run: nothing duplicated, nothing missing."""

from __future__ import annotations

import signal
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select

from cdrflow.client import AdminClient
from cdrflow.db.models import Call
from cdrflow.money import ZERO
from cdrflow.orchestrate import spawn_service
from services.rater.flat import CustomerRate, rate_call
from tests.integration.conftest import wait_until

ROWS = 60_000
ACME = CustomerRate("ACME", Decimal("0.0150"))


def write_big_file(path) -> Decimal:
    """A file of ROWS ACME calls; returns the invoice total a clean run must give."""
    start = datetime(2026, 10, 2, 8, 0, 0)
    expected = ZERO
    with path.open("w") as fh:
        fh.write("cli,dialled,start,duration\n")
        for n in range(ROWS):
            duration = 1 + (n * 37) % 900
            fh.write(f"+44163296000{1 + n % 2},01174960{n % 1000:03d},{(start + timedelta(seconds=n * 7)).isoformat()},{duration}\n")
            expected += rate_call(n + 2, duration, "", ACME).charge
    return expected


def stored_calls(database) -> tuple[int, int]:
    with database.transaction() as session:
        return session.execute(select(func.count(), func.count(func.distinct(Call.row)))).one()


def test_rater_killed_mid_file_restarts_to_the_clean_run_result(settings, running, database, tmp_path):
    expected_total = write_big_file(tmp_path / "big.csv")
    client = AdminClient(settings.admin_url)
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
