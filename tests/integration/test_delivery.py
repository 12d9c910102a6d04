"""What an operator does when a file stops: it says why (stuck, or failed with the service's
reason), `cdrflow files retry` sends it through once more (nothing stored twice), a dead
letter is replayed once after the cause is fixed, and a hostile file ends with a clear reason
while a good file behind it is rated. Every service its own process on the real broker and
PostgreSQL."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys

import orjson
from confluent_kafka import Producer
from sqlalchemy import func, select

from cdrflow.bus.topics import Topic, topic_name
from cdrflow.client import AdminClient
from cdrflow.db.models import Call, DeadLetter, Invoice
from cdrflow_app.demo import SAMPLES
from cdrflow.events import Event, EventType
from cdrflow_app.orchestrate import pipeline, settings_env, spawn_service
from tests.integration.conftest import REPO, wait_until

CORE = ("dedupe", "parser", "rater", "invoicer", "admin")


def cdrflow(settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cdrflow_app", *args], env=os.environ | settings_env(settings),
                          capture_output=True, text=True, timeout=120)


def upload(client: AdminClient, path, carrier="gamma") -> str:
    return client.upload(path, carrier=carrier, kind="cdr", period="daily", direction="outbound")["file_id"]


def status_of(client: AdminClient, file_id: str) -> str | None:
    try:
        return client.file(file_id)["status"]
    except Exception:  # noqa: BLE001 - not recorded yet
        return None


def calls_of(database, file_id: str) -> tuple[int, int]:
    with database.transaction() as session:
        return session.execute(select(func.count(), func.count(func.distinct(Call.row)))
                               .where(Call.file_id == file_id)).one()


def test_a_stuck_file_says_where_it_stopped_and_a_retry_sends_it_through_once(settings, database, tmp_path):
    settings = settings.model_copy(update={"stuck_after_minutes": 0.05})  # 3 s
    client = AdminClient.for_settings(settings)
    with pipeline(settings, log_dir=str(tmp_path), services=tuple(s for s in CORE if s != "parser")) as procs:
        file_id = upload(client, SAMPLES / "gamma-cdr-20261001.csv")
        wait_until("stuck at parsing", lambda: (client.file(file_id).get("stuck") if status_of(client, file_id)
                                                 else False), timeout=60)
        listed = cdrflow(settings, "files")
        assert "stuck at parsing: accepted" in listed.stdout and f"cdrflow files retry {file_id}" in listed.stdout

        retried = cdrflow(settings, "files", "retry", file_id, "--reason", "parser was down")
        assert retried.returncode == 0, retried.stderr
        assert f"retry of {file_id} requested" in retried.stdout
        procs["parser"] = spawn_service("parser", settings, log_dir=str(tmp_path))
        wait_until("rated", lambda: status_of(client, file_id) == "rated", timeout=120)
        # Two file-accepted events reached the parser (the first and the retry): stored once.
        view = client.file(file_id)
        assert view["calls"] == view["rows"] - view["rejected"] == 7
        assert calls_of(database, file_id) == (7, 7)
        again = cdrflow(settings, "files", "retry", file_id)
        assert again.returncode == 1 and "is rated: only a failed or stuck file" in again.stderr


def test_a_file_failed_for_its_carrier_format_is_retried_once_the_format_is_fixed(settings, database, running,
                                                                                 tmp_path):
    """Gamma's own CDR layout, while the carrier is still set to generic-cdr: the file fails with
    the reason; the operator sets the format and retries; the same file is rated, every call once."""
    client = AdminClient.for_settings(settings)
    file_id = upload(client, REPO / "tests/fixtures/formats/gamma-cdr-20261031.csv")
    wait_until("failed", lambda: status_of(client, file_id) == "failed", timeout=60)
    assert "header lacks cli, dialled, start" in client.file(file_id)["status_reason"]

    fixed = cdrflow(settings, "formats", "use", "gamma", "--kind", "cdr", "--format", "gamma")
    assert fixed.returncode == 0, fixed.stderr
    assert cdrflow(settings, "files", "retry", file_id).returncode == 0
    wait_until("rated", lambda: status_of(client, file_id) == "rated", timeout=90)
    view = client.file(file_id)
    assert view["calls"] == view["rows"] - view["rejected"] > 0
    assert calls_of(database, file_id)[0] == view["calls"]


def test_a_dead_letter_is_replayed_once_after_its_cause_is_fixed(settings, database, running):
    """A billing run for a customer the invoicer doesn't know (sent straight to the topic, as a
    scheduler elsewhere might) is dead-lettered with the reason; once the customer exists, a
    replay issues the invoice, and a second replay is refused."""
    run = Event(type=EventType.RUN_CLOSED, source="cdrflow/test", subject="NEWCO/2026-10",
                data={"run_id": "3b0c8a52-0000-4000-8000-000000000001", "customer": "NEWCO", "period": "2026-10",
                      "period_start": "2026-10-01", "period_end": "2026-11-01", "trigger": "manual"})
    producer = Producer({"bootstrap.servers": settings.bootstrap})
    producer.produce(topic_name(settings.namespace, Topic.RUN_CLOSED), run.to_bytes(), key=b"NEWCO")
    producer.flush(10)

    def letters():
        with database.transaction() as session:
            return session.scalars(select(DeadLetter)).all()

    [letter] = wait_until("dead letter", letters, timeout=60)
    listed = cdrflow(settings, "dlq", "list", "--service", "invoicer", "--json")
    [shown] = orjson.loads(listed.stdout)
    assert shown["id"] == letter.id and "unknown customer 'NEWCO'" in shown["error"]

    added = cdrflow(settings, "customers", "add", "NEWCO", "--name", "New Co", "--tariff", "business",
                    "--cli", "+441632960077")
    assert added.returncode == 0, added.stderr
    setup = cdrflow(settings, "charges", "add", "--customer", "NEWCO", "--description", "Installation",
                    "--amount", "50.00", "--frequency", "once", "--start", "2026-10-15")
    assert setup.returncode == 0, setup.stderr  # something to bill: a run with nothing makes no invoice
    replayed = cdrflow(settings, "dlq", "replay", str(letter.id), "--reason", "customer added")
    assert replayed.returncode == 0, replayed.stderr

    def invoices():
        with database.transaction() as session:
            return session.scalars(select(Invoice.number).where(Invoice.customer == "NEWCO")).all()

    assert len(wait_until("invoice", invoices, timeout=60)) == 1
    twice = cdrflow(settings, "dlq", "replay", str(letter.id))
    assert twice.returncode == 1 and "replayed once" in twice.stderr
    assert len(letters()) == 1 and len(invoices()) == 1


def test_hostile_files_end_with_a_clear_reason_and_a_good_file_after_them_is_rated(settings, database, tmp_path):
    """A 50,000,000-digit dialled number, a 50 MB field, a gzip of 100 MB of newlines, and rows
    whose record-parsed batch would be far over the broker's limit at the batch size set: each
    file ends final with its reason, and the partition keeps moving."""
    settings = settings.model_copy(update={"batch_size": 50_000})
    client = AdminClient.for_settings(settings)
    header = "cli,dialled,start,duration,charge_code,account_code\n"
    good_row = "+441632960001,01174960123,2026-10-01T09:15:00,125,,\n"
    long_number = tmp_path / "long-number.csv"
    long_number.write_text(header + "+441632960001," + "4" * 50_000_000 + ",2026-10-01T09:15:00,60,,\n" + good_row)
    big_field = tmp_path / "big-field.csv"
    big_field.write_text(header + "+441632960001,01174960123,2026-10-01T09:15:00,60,," + "x" * 50_000_000 + "\n"
                         + good_row)
    newlines = tmp_path / "newlines.csv.gz"
    with gzip.open(newlines, "wb", compresslevel=1) as fh:
        fh.write(header.encode() + b"\n" * 100_000_000)
    wide = tmp_path / "wide.csv"  # 20,000 rows of ~220 bytes: one 50,000-row batch would be ~8 MB
    with wide.open("w") as fh:
        fh.write(header)
        for n in range(20_000):
            fh.write(f"+441632960001,0117496{n % 10000:04d},2026-10-0{1 + n % 9}T{n % 24:02d}:{n % 60:02d}:00,"
                     f"{1 + n % 900},{'C' * 64},{'A' * 59}{n:05d}\n")

    with pipeline(settings, log_dir=str(tmp_path), services=CORE):
        ids = {name: upload(client, path) for name, path in
               (("long", long_number), ("field", big_field), ("newlines", newlines), ("wide", wide))}
        good = upload(client, SAMPLES / "gamma-cdr-20261001.csv")
        wait_until("good file rated", lambda: status_of(client, good) == "rated", timeout=240)
        for file_id in ids.values():
            wait_until("final", lambda f=file_id: status_of(client, f) in ("rated", "failed"), timeout=120)
        views = {name: client.file(file_id) for name, file_id in ids.items()}

    for name in ("long", "field"):
        view = views[name]
        assert view["rejected"] == 1 and view["calls"] == 1, view  # the good row of the file went on
        [rejection] = view["rejections"]
        assert rejection["row"] == 2 and len(rejection["reason"]) < 1000 and len(rejection["raw"]) <= 1000
        assert len(view["status_reason"] or "") < 1000
    assert views["newlines"]["status"] == "failed" and "blank lines" in views["newlines"]["status_reason"]
    assert views["wide"]["status"] == "rated" and calls_of(database, ids["wide"]) == (20_000, 20_000)
    with database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(DeadLetter)) == 0
