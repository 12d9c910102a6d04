"""A poison message is dead-lettered and the stream goes on; bad uploads get a clear error and
nothing is half-stored."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest
from confluent_kafka import Producer
from sqlalchemy import func, select

from cdrflow.bus.topics import Topic, dead_letter_name, topic_name
from cdrflow.client import AdminApiError, AdminClient
from cdrflow.db.models import File
from cdrflow_app.demo import SAMPLES
from cdrflow.errors import BadFileError
from cdrflow_app.orchestrate import settings_env
from tests.integration.conftest import read_topic, wait_until
from tests.schemas import validate_event


def test_a_malformed_message_is_dead_lettered_and_the_next_good_one_is_processed(settings, running):
    producer = Producer({"bootstrap.servers": settings.bootstrap})
    arrived = topic_name(settings.namespace, Topic.FILE_ARRIVED)
    producer.produce(arrived, b"this is not an event", key=b"poison")
    producer.produce(arrived, orjson.dumps({"specversion": "1.0", "id": "x", "source": "cdrflow/test",
                                            "type": "cdrflow.file.arrived.v1", "time": "2026-10-01T00:00:00+00:00",
                                            "subject": "", "data": {"file_id": "x"}}), key=b"incomplete")
    producer.flush(10)

    client = AdminClient.for_settings(settings)
    good = client.upload(SAMPLES / "btw-cdr-20261002.csv", carrier="btw", kind="cdr", period="daily",
                         direction="outbound")["file_id"]
    wait_until("good file rated", lambda: client.file(good)["status"] == "rated" if
               any(f["file_id"] == good for f in client.files()) else False)

    letters = [orjson.loads(v) for v in read_topic(settings.bootstrap,
                                                    dead_letter_name(settings.namespace, Topic.FILE_ARRIVED), 2)]
    for letter in letters:
        validate_event(letter)
    by_key = {letter["data"]["key"]: letter["data"] for letter in letters}
    assert by_key["poison"]["error_type"] == "BadEventError"
    assert "not JSON" in by_key["poison"]["error"]
    assert by_key["poison"]["payload"] == "this is not an event"
    assert "lacks data field(s): fingerprint" in by_key["incomplete"]["error"]


def stored_blobs(settings) -> list:
    return sorted(p for p in settings.file_store_dir.rglob("*") if p.is_file())


def test_bad_uploads_get_a_clear_error_and_nothing_is_half_stored(settings, running, database, tmp_path):
    client = AdminClient.for_settings(settings)
    blobs_before = stored_blobs(settings)  # the sample rate sheets live in the store too
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(AdminApiError, match="file is empty"):
        client.upload(empty, carrier="gamma", kind="cdr", period="daily", direction="outbound")
    with pytest.raises(AdminApiError, match="unknown carrier 'nope'"):
        client.upload(SAMPLES / "btw-cdr-20261002.csv", carrier="nope", kind="cdr", period="daily",
                      direction="outbound")
    with pytest.raises(BadFileError, match="missing.csv: can't read the file: No such file or directory"):
        client.upload(tmp_path / "missing.csv", carrier="gamma", kind="cdr", period="daily", direction="outbound")

    assert stored_blobs(settings) == blobs_before
    assert read_topic(settings.bootstrap, topic_name(settings.namespace, Topic.FILE_ARRIVED), 1, timeout=5) == []
    with database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(File)) == 0

    cli = subprocess.run([sys.executable, "-m", "cdrflow_app", "upload", str(SAMPLES / "btw-cdr-20261002.csv"),
                          "--carrier", "nope", "--direction", "outbound"],
                         env=os.environ | settings_env(settings), capture_output=True, text=True, timeout=60)
    assert cli.returncode == 1
    assert "cdrflow: error: unknown carrier 'nope'" in cli.stderr


def test_a_binary_file_fails_with_its_reason_and_its_bytes_are_kept(settings, running, tmp_path):
    client = AdminClient.for_settings(settings)
    logo = tmp_path / "logo.png"
    logo.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    reply = client.upload(logo, carrier="gamma", kind="cdr", period="daily", direction="outbound")
    wait_until("file failed", lambda: any(f["file_id"] == reply["file_id"] and f["status"] == "failed"
                                          for f in client.files()))
    assert "logo.png: not a text file (contains NUL bytes)" in client.file(reply["file_id"])["status_reason"]
    assert (settings.file_store_dir / reply["fingerprint"][:2] / reply["fingerprint"][2:4]
            / reply["fingerprint"]).read_bytes() == logo.read_bytes()
