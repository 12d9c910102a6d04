"""``cdrflow up`` in a real terminal (a pseudo-terminal) against the project's own Kafka broker:
the summary on the screen, every service's JSON log in ``<data_dir>/logs``, and Ctrl-C stopping
it all (issue 12)."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
import uuid

import orjson

from cdrflow.localkafka import free_port
from cdrflow_app.orchestrate import PIPELINE_SERVICES, settings_env
from cdrflow.settings import Settings

BUDGET_S = 50.0
"""Start-up to stopped; the test stops waiting at this point whatever happened."""


def _read_until(fd: int, wanted: str, deadline: float, seen: list[str]) -> str:
    """What the terminal showed, read until ``wanted`` appears (or the deadline passes)."""
    while wanted not in "".join(seen) and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the terminal closed: every process holding it has exited
                break
            if not chunk:
                break
            seen.append(chunk.decode("utf-8", "replace").replace("\r\n", "\n"))
    return "".join(seen)


def test_up_in_a_terminal_prints_a_summary_writes_json_logs_to_files_and_stops_on_ctrl_c(kafka_bootstrap, tmp_path):
    settings = Settings(data_dir=tmp_path / "var", kafka_bootstrap=kafka_bootstrap,
                        namespace="t" + uuid.uuid4().hex[:12], admin_port=free_port(), mailgate_port=free_port(),
                        scheduler_interval_seconds=3600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDRFLOW_") or k == "CDRFLOW_KAFKA_LIBS"}
    leader, follower = pty.openpty()
    deadline = time.monotonic() + BUDGET_S
    up = subprocess.Popen([sys.executable, "-m", "cdrflow_app", "up"], cwd=tmp_path, env=env | settings_env(settings),
                          stdin=follower, stdout=follower, stderr=follower, start_new_session=True)
    os.close(follower)
    seen: list[str] = []
    try:
        screen = _read_until(leader, "tail -f", deadline, seen)
        assert "tail -f" in screen, f"no summary within {BUDGET_S:g}s:\n{screen[-3000:]}"
        for service in PIPELINE_SERVICES:
            assert any(line.split()[:2] == [service, "pid"] for line in screen.splitlines()), screen
        assert f"admin API     {settings.admin_url}" in screen
        assert f"mail gateway  smtp://127.0.0.1:{settings.mailgate_port}" in screen
        assert "not answering yet" not in screen
        assert f"broker        Kafka cluster {kafka_bootstrap} (CDRFLOW_KAFKA_BOOTSTRAP)" in screen
        assert f"logs          var{os.sep}logs{os.sep}<service>.log" in screen
        assert '"event"' not in screen  # no JSON log line on the terminal

        log_dir = tmp_path / "var" / "logs"
        assert sorted(p.stem for p in log_dir.glob("*.log")) == sorted(PIPELINE_SERVICES)
        mailgate = [orjson.loads(line) for line in (log_dir / "mailgate.log").read_text().splitlines() if line]
        assert any(e["event"] == "mailgate_started" and e["service"] == "mailgate" for e in mailgate)

        os.killpg(up.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground process group
        screen = _read_until(leader, "cdrflow stopped", deadline, seen)
        assert up.wait(max(1.0, deadline - time.monotonic())) == 0, screen[-3000:]
        assert "cdrflow stopped" in screen
        assert '"event"' not in screen
        stopped = [orjson.loads(line) for line in (log_dir / "collector.log").read_text().splitlines() if line]
        assert stopped[-1]["event"] == "collector_stopped"
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait(10)
        os.close(leader)


def test_a_collector_refusing_to_start_is_reported_with_the_end_of_its_log(tmp_path):
    """A service that exits at start-up (here: the collector, sources saved and no
    CDRFLOW_SECRET_KEY) stops the start, naming it, its exit status and its log's last line."""
    from cdrflow.db import Database, migrate
    from cdrflow.errors import InfrastructureError
    from cdrflow_app.orchestrate import pipeline
    from cdrflow_app.up_summary import exited_report
    from cdrflow.reference import add_carrier
    from services.collector.credentials import Credentials, new_secret_key
    from services.collector.rules import parse_rule
    from services.collector.sources import SourceSpec, save_source

    settings = Settings(data_dir=tmp_path / "var", admin_port=free_port(), mailgate_port=free_port())
    migrate(settings.effective_database_url)
    database = Database(settings.effective_database_url)
    with database.transaction() as session:
        add_carrier(session, "gamma", "Gamma Telecom", "gamma")
        save_source(session, SourceSpec("gamma-ftp", "gamma", "ftp", "127.0.0.1", "carrier",
                                        Credentials(password="s3cret"), [parse_rule("*=cdr,daily,outbound")]),
                    new_secret_key())
    database.dispose()
    log_dir = tmp_path / "var" / "logs"
    log_dir.mkdir(parents=True)
    try:  # the admin API may answer first: then cdrflow up's watch finds the collector gone
        with pipeline(settings, str(log_dir), services=("collector", "admin")) as procs:
            procs["collector"].wait(30)
            report = exited_report(procs, ["collector"], log_dir)
    except InfrastructureError as exc:
        report = str(exc)
    assert "collector (exit status 1)" in report.splitlines()[0], report
    assert f"collector: {(log_dir / 'collector.log').resolve()} ends: " in report
    assert "CDRFLOW_SECRET_KEY is not set, but 1 source(s) (gamma-ftp)" in report
    assert "the same key the sources were saved with" in report
