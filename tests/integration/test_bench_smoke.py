"""bench/bench_checkpoint.py still runs end to end (``--quick``) on the session's broker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_checkpoint_quick_times_floor_publish_after_commit_and_outbox(kafka_bootstrap: str,
                                                                          tmp_path: Path) -> None:
    env = os.environ | {"CDRFLOW_BENCH_KAFKA_BOOTSTRAP": kafka_bootstrap}
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_checkpoint.py"), "--quick",
         "--database-url", f"sqlite:///{tmp_path / 'bench.sqlite'}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "from CDRFLOW_BENCH_KAFKA_BOOTSTRAP" in out, out  # it used the session broker, started none
    for phase in ("floor", "publish-after-commit", "outbox"):
        assert re.search(rf"^{phase} +\d+\.\d\d +\d+\.\d +\d+\.\d\dx", out, re.MULTILINE), out
    assert re.search(r"^cheaper: (publish-after-commit|outbox), by \d+\.\d\d s .* \d+\.\d\dx as long", out,
                     re.MULTILINE), out
