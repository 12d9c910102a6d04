"""The layers hold: the application (``cdrflow_app``: CLI root, demo, orchestration) imports the
services, the services import the shared kit (``cdrflow``), and nothing imports upwards. The
contract is import-linter's, in pyproject.toml; this runs it as CI does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def test_the_import_linter_contract_is_kept():
    run = subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "1 kept, 0 broken" in run.stdout


def test_a_kit_module_importing_a_service_breaks_the_contract(tmp_path):
    """The contract can fail: a copy of the tree where the kit imports a service is refused."""
    for package in ("cdrflow", "services", "cdrflow_app"):
        subprocess.run(["cp", "-r", str(REPO / package), str(tmp_path / package)], check=True)
    (tmp_path / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    (tmp_path / "cdrflow" / "upwards.py").write_text("import services.rater.plan\n")
    run = subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 1 and "cdrflow.upwards -> services.rater.plan" in run.stdout, run.stdout[-3000:]
