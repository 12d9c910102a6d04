"""bench/bench_pipeline.py still runs end to end (``--quick``) on the session's broker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("dedupe", "parser", "rater", "invoicer", "admin")


def test_bench_pipeline_quick_stores_every_call_and_reports_calls_per_second_and_each_service(
        kafka_bootstrap: str) -> None:
    env = os.environ | {"CDRFLOW_BENCH_KAFKA_BOOTSTRAP": kafka_bootstrap}
    done = subprocess.run([sys.executable, str(REPO / "bench" / "bench_pipeline.py"), "--quick"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "from CDRFLOW_BENCH_KAFKA_BOOTSTRAP" in out, out  # it used the session broker, started none
    assert re.search(r"^  result: 20,000 calls \(", out, re.MULTILINE), out  # every call stored
    # The summary row: calls, instances, wall s, calls/s, floor s, ratio.
    assert re.search(r"^ +20,000 +1 +\d+\.\d\d +[\d,]+ +\d+\.\d\d +\d+\.\d\dx", out, re.MULTILINE), out
    for service in SERVICES:  # CPU seconds and peak RSS of each service
        assert re.search(rf"^  {service} +\d+\.\d\d +- +\d+ MiB", out, re.MULTILINE), out
    assert "identical: n/a" in out, out  # one instance count only: nothing to compare
