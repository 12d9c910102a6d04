"""Upload: ``POST /files`` on the admin API (a real uvicorn process) and ``cdrflow upload``."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from cdrflow.bus import Topic, topic_name
from cdrflow.client import AdminClient
from cdrflow_app.demo import SAMPLES
from cdrflow_app.orchestrate import settings_env, spawn_service, stop_processes, wait_for_admin
from tests.integration.conftest import read_topic
from tests.schemas import validate_event
from tests.authhelp import admin_headers

BIG = 64 * 1024 * 1024  # bytes: far more than the memory growth the upload may cause
ALLOWED_GROWTH = 16 * 1024 * 1024  # bytes of peak resident memory an upload of BIG may add


@pytest.fixture
def admin(settings, tmp_path) -> Iterator[int]:
    """The admin API alone, as its own process (as ``cdrflow up`` runs it). Yields its pid."""
    proc = spawn_service("admin", settings, log_dir=str(tmp_path))
    try:
        wait_for_admin(settings, {"admin": proc})
        yield proc.pid
    finally:
        stop_processes({"admin": proc})


def peak_rss(pid: int) -> int:
    """The process's peak resident set size so far (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def arrived(settings, count: int) -> list[dict]:
    events = [orjson.loads(v) for v in read_topic(settings.bootstrap, topic_name(settings.namespace,
                                                                                 Topic.FILE_ARRIVED), count)]
    for event in events:
        validate_event(event)
    return events


def test_a_multipart_upload_is_stored_and_announced_with_what_the_operator_said(settings, admin, tmp_path):
    sample = SAMPLES / "btw-cdr-20261002.csv"
    with sample.open("rb") as fh:
        reply = httpx.post(f"{settings.admin_url}/files", timeout=30, headers=admin_headers(settings),
                           data={"carrier": "btw", "kind": "sdr", "period": "monthly", "direction": "inbound"},
                           files={"file": ("../../etc/btw monthly.csv", fh, "text/csv")})
    # 202: stored and its file-arrived event committed to the outbox; the broker has it already
    assert reply.status_code == 202, reply.text
    assert reply.json()["announced"] is True
    assert reply.json()["fingerprint"] == hashlib.sha256(sample.read_bytes()).hexdigest()

    cli = subprocess.run([sys.executable, "-m", "cdrflow_app", "upload", str(sample), "--carrier", "btw",
                          "--kind", "cdr", "--period", "daily", "--direction", "outbound"],
                         env=os.environ | settings_env(settings), capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr

    first, second = arrived(settings, 2)
    assert {k: first["data"][k] for k in ("carrier", "kind", "period", "direction", "original_name", "channel")} \
        == {"carrier": "btw", "kind": "sdr", "period": "monthly", "direction": "inbound",
            "original_name": "btw_monthly.csv", "channel": "upload"}
    assert (second["data"]["kind"], second["data"]["period"], second["data"]["direction"]) == \
        ("cdr", "daily", "outbound")
    assert cli.stdout.split()[0] == second["data"]["file_id"]


def test_a_multipart_upload_missing_a_field_or_naming_an_unknown_carrier_is_refused(settings, admin):
    files = {"file": ("x.csv", b"cli,dialled\n", "text/csv")}
    no_period = httpx.post(f"{settings.admin_url}/files", timeout=30, headers=admin_headers(settings), files=files,
                           data={"carrier": "btw", "kind": "cdr", "direction": "outbound"})
    assert (no_period.status_code, no_period.json()["error"]) == (400, "missing form field(s): period")
    no_file = httpx.post(f"{settings.admin_url}/files", timeout=30, headers=admin_headers(settings), files={"other": ("x.csv", b"1", "text/csv")},
                         data={"carrier": "btw", "kind": "cdr", "period": "daily", "direction": "outbound"})
    assert no_file.status_code == 400 and "part named 'file'" in no_file.json()["error"]
    unknown = httpx.post(f"{settings.admin_url}/files", timeout=30, headers=admin_headers(settings), files=files,
                         data={"carrier": "nope", "kind": "cdr", "period": "daily", "direction": "outbound"})
    assert unknown.status_code == 422 and "unknown carrier 'nope'" in unknown.json()["error"]
    assert read_topic(settings.bootstrap, topic_name(settings.namespace, Topic.FILE_ARRIVED), 1, timeout=3) == []


def _big_file(path: Path) -> str:
    line = b"441632960001,441632960999,2026-10-01T09:00:00,60\n"
    block = line * (65536 // len(line))
    digest = hashlib.sha256()
    with path.open("wb") as fh:
        written = 0
        while written < BIG:
            chunk = block + written.to_bytes(8, "big")  # no two blocks alike
            fh.write(chunk)
            digest.update(chunk)
            written += len(chunk)
    return digest.hexdigest()


def test_a_big_upload_is_streamed_not_read_into_the_servers_memory(settings, admin, tmp_path):
    big = tmp_path / "big.csv"
    fingerprint = _big_file(big)
    client = AdminClient.for_settings(settings)
    small = tmp_path / "small.csv"
    small.write_bytes(b"cli,dialled,start,duration\n")
    client.upload(small, carrier="gamma", kind="cdr", period="daily", direction="outbound")  # warm the server up
    before = peak_rss(admin)

    multipart = client.upload(big, carrier="gamma", kind="cdr", period="daily", direction="outbound")
    after_multipart = peak_rss(admin)
    with big.open("rb") as fh:
        raw = httpx.post(f"{settings.admin_url}/files", content=fh, timeout=120, headers=admin_headers(settings),
                         params={"carrier": "gamma", "kind": "cdr", "period": "daily", "direction": "outbound",
                                 "name": "big.csv"}).json()
    after_raw = peak_rss(admin)

    assert multipart["fingerprint"] == raw["fingerprint"] == fingerprint
    assert multipart["size"] == big.stat().st_size
    assert after_multipart - before < ALLOWED_GROWTH, f"multipart upload grew the server by {after_multipart - before}"
    assert after_raw - before < ALLOWED_GROWTH, f"raw upload grew the server by {after_raw - before}"
