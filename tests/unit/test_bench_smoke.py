"""The benchmarks that need no broker still run end to end (``--quick``), in a few seconds."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_billing_quick_issues_every_invoice_and_reports_floor_invoices_per_second_and_pdfs() -> None:
    done = subprocess.run([sys.executable, str(REPO / "bench" / "bench_billing.py"), "--quick"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \| load average ", out, re.MULTILINE), out
    assert re.search(r"^floor: .* marking the 4,000 calls, one transaction: \d+\.\d\d s$", out, re.MULTILINE), out
    assert re.search(r"^issue: 200 invoices .* +\d+\.\d\d s +[\d,]+ invoices/s +[\d,]+ calls/s +\d+\.\d× floor$",
                     out, re.MULTILINE), out
    assert re.search(r"^run \(close \+ issue\): \d+\.\d\d s, [\d,]+ invoices/s, \d+\.\d× floor$", out,
                     re.MULTILINE), out
    # 200 customers: 200 Call Charges lines and 50 recurring charges billed for two months each;
    # the bench itself checks every figure against its own recomputation from the input.
    assert ("made: 200 invoices (numbers 1..200, gap-free), 300 lines, 200 invoice-issued events in the outbox, "
            "4,000 calls invoiced, 200 invoice_issued log lines") in out, out
    assert re.search(r"^PDFs: 5 rendered \(invoice_pdf\) in \d+\.\d\d s, [\d,.]+ PDFs/s", out, re.MULTILINE), out
    assert done.stderr == "", done.stderr  # the service's logs went to the bench's temporary dir
