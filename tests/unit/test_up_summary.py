"""``cdrflow up`` at a terminal (issue 12): a short summary of what started and where it listens
and logs, the services' JSON logs in files, and the end of a dead service's log; JSON logs on
stderr when asked or when stdout is not a terminal."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from cdrflow.settings import Settings
from cdrflow_app.up_summary import (
    LAST_LINE_CHARS,
    Infrastructure,
    describe_broker,
    describe_database,
    exited_report,
    last_log_line,
    logs_dir,
    up_summary,
    wants_json_logs,
)


@pytest.fixture
def procs():
    """Real processes, as ``pipeline`` gives them: two that exit at once with a status of their own."""
    started = {name: subprocess.Popen([sys.executable, "-c", f"raise SystemExit({status})"])
               for name, status in (("admin", 0), ("collector", 1), ("mailgate", 0))}
    for proc in started.values():
        proc.wait(30)
    return started


def test_a_terminal_gets_log_files_and_a_pipe_or_the_flag_gets_json_on_stderr(tmp_path):
    leader, follower = os.openpty()
    with open(follower, "w") as terminal:
        assert wants_json_logs(False, terminal) is False
        assert wants_json_logs(True, terminal) is True  # --json-logs
    os.close(leader)
    read, write = os.pipe()
    with open(write, "w") as pipe:
        assert wants_json_logs(False, pipe) is True  # a container, a supervisor, `cdrflow up | tee`
    os.close(read)
    with open(tmp_path / "out.txt", "w") as redirected:
        assert wants_json_logs(False, redirected) is True
    assert wants_json_logs(False, io.StringIO()) is True


def test_the_logs_are_under_the_data_directory(tmp_path):
    assert logs_dir(Settings(data_dir=tmp_path / "var")) == tmp_path / "var" / "logs"


def test_the_summary_names_each_service_with_its_pid_and_where_the_api_mail_gateway_and_logs_are(tmp_path, procs):
    settings = Settings(data_dir=tmp_path, admin_port=8641, mailgate_port=2525, mail_domain="billing.example")
    infra = Infrastructure(describe_broker(settings, started_here=True), describe_database(settings))
    text = up_summary(settings, procs, infra, tmp_path / "logs")
    lines = text.splitlines()
    assert lines[0] == "cdrflow up: 3 service(s) running; Ctrl-C stops them all"
    assert lines[1:4] == [f"  admin      pid {procs['admin'].pid}", f"  collector  pid {procs['collector'].pid}",
                          f"  mailgate   pid {procs['mailgate'].pid}"]
    assert "  admin API     http://127.0.0.1:8641  (the cdrflow commands talk to it)" in lines
    assert ("  mail gateway  smtp://127.0.0.1:2525  (cdrs@billing.example, <carrier>.cdrs@billing.example; "
            "no STARTTLS)") in lines
    assert "  broker        local broker 127.0.0.1:9092 (started now, stopped with cdrflow up)" in lines
    assert f"  database      sqlite:///{(tmp_path / 'cdrflow.db').resolve()}" in lines
    logs = tmp_path.resolve() / "logs"
    assert (f"  logs          {logs}{os.sep}<service>.log  (JSON, one event per line; e.g. tail -f "
            f"{logs / 'collector.log'})") in lines


def test_the_summary_says_when_the_mail_gateway_is_not_answering_yet(tmp_path, procs):
    settings = Settings(data_dir=tmp_path)
    infra = Infrastructure(describe_broker(settings, started_here=False), describe_database(settings))
    text = up_summary(settings, procs, infra, tmp_path / "logs", mailgate_listening=False)
    assert "no STARTTLS, not answering yet: see its log)" in text
    assert "local broker 127.0.0.1:9092 (already running, left running)" in text


def test_the_summary_shows_paths_under_the_working_directory_as_typed(tmp_path, procs, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = Settings(data_dir=Path("var"))
    text = up_summary(settings, procs, Infrastructure("b", "d"), logs_dir(settings))
    assert f"  logs          var{os.sep}logs{os.sep}<service>.log" in text
    assert "tail -f var/logs/collector.log" in text


def test_an_external_cluster_and_a_database_password_are_shown_without_the_password():
    settings = Settings(kafka_bootstrap="kafka-1.example:9092",
                        database_url="postgresql+psycopg://cdrflow:hunter2@db.example:5432/billing")
    assert describe_broker(settings, started_here=False) == "Kafka cluster kafka-1.example:9092 (CDRFLOW_KAFKA_BOOTSTRAP)"
    assert describe_database(settings) == "postgresql+psycopg://cdrflow:***@db.example:5432/billing"


def test_a_dead_service_is_reported_with_its_exit_status_and_the_last_line_of_its_log(tmp_path, procs):
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    last = {"error": "CDRFLOW_SECRET_KEY is not set, but 1 source(s) (g) have …", "event": "collector_not_started"}
    (log_dir / "collector.log").write_bytes(b'{"event": "collector_started"}\n' + orjson.dumps(last) + b"\n\n")
    (log_dir / "admin.log").write_bytes(b"")
    report = exited_report(procs, ["collector", "admin"], log_dir, at_start_up=True)
    lines = report.splitlines()
    assert lines[0] == ("service(s) exited at start-up: collector (exit status 1), admin (exit status 0); "
                        "the other services are stopped")
    assert lines[1] == f"  collector: {(log_dir / 'collector.log').resolve()} ends: {orjson.dumps(last).decode()}"
    assert lines[2] == f"  admin: {(log_dir / 'admin.log').resolve()} is empty"


def test_with_json_logs_on_stderr_a_dead_service_is_pointed_to_its_lines_there(procs):
    report = exited_report(procs, ["collector"], None)
    assert report.splitlines() == [
        "service(s) exited: collector (exit status 1); the other services are stopped",
        "  collector: see its JSON log lines above (service=collector)"]


def test_the_last_log_line_is_read_from_the_end_of_a_large_log_and_cut_when_long(tmp_path):
    log = tmp_path / "parser.log"
    with log.open("wb") as fh:
        for i in range(50_000):  # about 2 MB: only its end is read
            fh.write(b'{"event": "file_parsed", "n": %d}\n' % i)
    assert last_log_line(log) == '{"event": "file_parsed", "n": 49999}'
    log.write_bytes(b'{"event": "x", "error": "' + b"e" * 1000 + b'"}\n')
    cut = last_log_line(log)
    assert cut is not None and len(cut) == LAST_LINE_CHARS + 1 and cut.endswith("…")
    assert last_log_line(tmp_path / "missing.log") is None
