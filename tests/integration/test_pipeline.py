"""Acceptance: all services as separate processes against the real broker and PostgreSQL."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

import orjson
from cloudevents.core.bindings.kafka import KafkaMessage, from_kafka
from cloudevents.core.formats.json import JSONFormat
from sqlalchemy import func, select

from cdrflow.bus.topics import Topic, topic_name
from cdrflow.client import AdminClient
from cdrflow.db.models import Call, File
from cdrflow_app.demo import SAMPLES
from tests.integration.conftest import read_messages, read_topic, wait_until
from tests.schemas import validate_event

DONE = {"held", "rated", "failed", "discarded"}


def upload_sample(client: AdminClient, name: str, carrier: str) -> str:
    reply = client.upload(SAMPLES / name, carrier=carrier, kind="cdr", period="daily", direction="outbound")
    return reply["file_id"]


def file_status(client: AdminClient, file_id: str) -> str | None:
    matches = [f for f in client.files() if f["file_id"] == file_id]
    return matches[0]["status"] if matches else None


def test_two_files_and_a_copy_give_one_held_copy_calls_once_and_exact_invoices(settings, running, database):
    client = AdminClient.for_settings(settings)
    gamma = upload_sample(client, "gamma-cdr-20261001.csv", "gamma")
    btw = upload_sample(client, "btw-cdr-20261002.csv", "btw")
    wait_until("first gamma file processed", lambda: file_status(client, gamma) in DONE)
    copy = upload_sample(client, "gamma-cdr-20261001-resent.csv", "gamma")
    for file_id in (gamma, btw, copy):
        wait_until(f"file {file_id} processed", lambda f=file_id: file_status(client, f) in DONE)

    held = client.file(copy)
    assert held["status"] == "held"
    assert [c["file_id"] for c in held["candidates"]] == [gamma]
    assert client.file(gamma)["status"] == "rated" and client.file(btw)["status"] == "rated"

    with database.transaction() as session:
        per_file = dict(session.execute(select(Call.file_id, func.count()).group_by(Call.file_id)).all())
        assert per_file == {gamma: 7, btw: 5}  # 8 gamma rows less 1 rejected; the copy adds nothing
        assert session.get(File, gamma).rejected == 1

    client.close_run("ACME", "2026-10")
    client.close_run("BRISDENT", "2026-10")
    invoices = wait_until("two invoices", lambda: (lambda i: i if len(i) == 2 else None)(client.invoices()))
    totals = {i["customer"]: Decimal(i["total"]) for i in invoices}
    # the calls' charges as the sample rate sheets price them, then the invoice's own arithmetic:
    # Call Charges rounded once to the penny, VAT 20 % on the net rounded once (docs/billing.md)
    calls = {"ACME": Decimal("0.3154"), "BRISDENT": Decimal("0.3113")}
    net = {c: v.quantize(Decimal("0.01"), ROUND_HALF_UP) for c, v in calls.items()}
    assert totals == {c: n + (n * Decimal("0.20")).quantize(Decimal("0.01"), ROUND_HALF_UP) for c, n in net.items()}

    issued = [orjson.loads(v) for v in read_topic(settings.bootstrap,
                                                   topic_name(settings.namespace, Topic.INVOICE_ISSUED), 2)]
    for event in issued:
        validate_event(event)
    assert {e["data"]["customer"]: Decimal(e["data"]["total"]) for e in issued} == totals

    # Billing the same period again issues no second invoice.
    client.close_run("ACME", "2026-10")
    assert len(read_topic(settings.bootstrap, topic_name(settings.namespace, Topic.INVOICE_ISSUED), 3, timeout=8)) == 2
    assert len(client.invoices()) == 2


def test_every_event_the_services_produced_matches_its_schema(settings, running):
    client = AdminClient.for_settings(settings)
    first = upload_sample(client, "btw-cdr-20261002.csv", "btw")
    wait_until("file rated", lambda: file_status(client, first) == "rated")
    copy = upload_sample(client, "btw-cdr-20261002.csv", "btw")
    wait_until("copy held", lambda: file_status(client, copy) == "held")
    client.file_command(copy, "discard")
    wait_until("copy discarded", lambda: file_status(client, copy) == "discarded")
    client.close_run("BRISDENT", "2026-10")
    wait_until("invoice", lambda: client.invoices())

    expected = {Topic.FILE_ARRIVED: 2, Topic.FILE_ACCEPTED: 1, Topic.FILE_HELD: 1, Topic.RECORD_PARSED: 2,
                Topic.CALL_RATED: 2, Topic.ADMIN_COMMANDS: 1, Topic.RUN_CLOSED: 1, Topic.INVOICE_ISSUED: 1}
    for topic, count in expected.items():
        messages = read_messages(settings.bootstrap, topic_name(settings.namespace, topic), count)
        assert len(messages) == count, topic
        for msg in messages:
            doc = orjson.loads(msg.value())
            validate_event(doc)
            # The CloudEvents Kafka binding, structured mode, read back by the CloudEvents SDK.
            assert dict(msg.headers() or [])["content-type"] == b"application/cloudevents+json; charset=utf-8"
            event = from_kafka(KafkaMessage(headers=dict(msg.headers()), key=msg.key(), value=msg.value()),
                               JSONFormat())
            assert (event.get_specversion(), event.get_id(), event.get_type(), event.get_source(),
                    event.get_subject(), event.get_datacontenttype()) == (
                "1.0", doc["id"], doc["type"], doc["source"], doc["subject"], "application/json"), topic
            assert event.get_time() == datetime.fromisoformat(doc["time"]) and event.get_data() == doc["data"]
            assert event.get_extension("partitionkey") == msg.key().decode()
