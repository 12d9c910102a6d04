"""Dead letters over the admin API and ``cdrflow dlq`` (SQLite; the broker faked): list, show,
replay through the admin outbox, and a replay that goes through once."""

import base64
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from starlette.testclient import TestClient

import cdrflow.cli_dlq
from cdrflow.bus import Topic, topic_name
from cdrflow.bus.outbox import OutboxRelay, add_raw_to_outbox
from cdrflow_app.cli import main
from cdrflow.cli_dlq import table
from cdrflow.client import AdminClient
from cdrflow.db.models import DeadLetter, OutboxEntry
from cdrflow.events import Event, EventType
from services.admin.app import create_app
from services.admin.dlq_api import dlq_routes
from tests.unit.test_handlers import runtime  # noqa: F401  (fixture)
from tests.authhelp import authed

FILE_ID = "0b7e7a52-5d3c-4a51-9d59-2f7bd1a0c7e1"
FAILED_AT = datetime(2026, 10, 2, 9, 30, tzinfo=UTC)


class RecordingProducer:
    """Stands in for the broker at unit level: the integration tests send through the real one."""

    def __init__(self):
        self.sent = []

    def send(self, topic, key, event):
        self.sent.append((topic, key, event.to_bytes()))

    def send_raw(self, topic, key, payload):
        self.sent.append((topic, key, payload))

    def flush(self, timeout=None):
        return 0


@pytest.fixture
def api(runtime):
    runtime.__dict__["producer"] = RecordingProducer()
    app = create_app(runtime)
    if not any(getattr(r, "path", None) == "/dead-letters" for r in app.routes):
        app.router.routes.extend(dlq_routes(runtime))  # until app.py lists dlq_routes itself
    client = authed(TestClient(app), runtime)  # not entered: no lifespan, so no background relay; tests drive the relay
    yield client
    client.close()


ACCEPTED = Event(type=EventType.FILE_ACCEPTED, source="cdrflow/dedupe", subject=FILE_ID,
                 data={"file_id": FILE_ID, "carrier": "gamma"})
"""The message a dead letter keeps, unless a test gives another payload."""


def dead_letter(runtime, *, service="parser", payload=None, offset=41, error="file-accepted names unknown file",
                topic=Topic.FILE_ACCEPTED) -> int:
    event = ACCEPTED
    with runtime.database.transaction() as session:
        letter = DeadLetter(service=service, topic=topic_name(runtime.settings.namespace, topic), partition=2,
                            offset=offset, key=FILE_ID, event_id=event.id, event_type=event.type, file_id=FILE_ID,
                            error_type="UnknownFileError", error=error,
                            payload=event.to_bytes() if payload is None else payload, failed_at=FAILED_AT)
        session.add(letter)
        session.flush()
        return letter.id


def outbox(runtime) -> list[OutboxEntry]:
    with runtime.database.transaction() as session:
        return list(session.scalars(select(OutboxEntry).order_by(OutboxEntry.id)))


def test_dead_letters_are_listed_without_payloads_and_filtered_by_service(runtime, api):
    parser_letter = dead_letter(runtime)
    dead_letter(runtime, service="rater", topic=Topic.RECORD_PARSED, offset=7)
    listed = api.get("/dead-letters").json()
    assert [(d["id"], d["service"]) for d in listed][0] == (parser_letter, "parser")
    assert [d["service"] for d in listed] == ["parser", "rater"]
    assert set(listed[0]) == {"id", "service", "topic", "partition", "offset", "key", "event_type", "file_id",
                              "error_type", "error", "failed_at", "replayed_at", "replayed_by"}
    assert listed[0] | {"id": None} == {
        "id": None, "service": "parser", "topic": "cdrflow.file-accepted", "partition": 2, "offset": 41,
        "key": FILE_ID, "event_type": EventType.FILE_ACCEPTED, "file_id": FILE_ID, "error_type": "UnknownFileError",
        "error": "file-accepted names unknown file", "failed_at": FAILED_AT.isoformat(), "replayed_at": None,
        "replayed_by": None}
    assert [d["service"] for d in api.get("/dead-letters", params={"service": "rater"}).json()] == ["rater"]
    assert api.get("/dead-letters", params={"service": "invoicer"}).json() == []


def test_a_dead_letter_is_shown_with_its_payload_as_text(runtime, api):
    letter_id = dead_letter(runtime)
    view = api.get(f"/dead-letters/{letter_id}").json()
    assert view["payload_encoding"] == "utf-8"
    assert Event.from_bytes(view["payload"].encode()).subject == FILE_ID
    assert view["event_id"] and view["error"] == "file-accepted names unknown file"


def test_a_payload_that_is_not_utf8_is_shown_as_base64(runtime, api):
    letter_id = dead_letter(runtime, payload=b"\xff\xfe not an event")
    view = api.get(f"/dead-letters/{letter_id}").json()
    assert view["payload_encoding"] == "base64"
    assert base64.b64decode(view["payload"]) == b"\xff\xfe not an event"


def test_replay_queues_the_original_message_on_its_original_topic_for_the_admin_relay(runtime, api):
    letter_id = dead_letter(runtime)
    reply = api.post(f"/dead-letters/{letter_id}/replay", json={"reason": "carrier gamma fixed"},
                     headers={"x-operator": "alice"})
    assert reply.status_code == 202
    assert reply.json()["id"] == letter_id and reply.json()["replayed"] is True
    assert reply.json()["topic"] == "cdrflow.file-accepted"
    [entry] = outbox(runtime)
    assert (entry.event_id, entry.publisher, entry.topic, entry.key) == (
        f"replay-{letter_id}", "admin", "cdrflow.file-accepted", FILE_ID)
    assert entry.payload == ACCEPTED.to_bytes()
    view = api.get(f"/dead-letters/{letter_id}").json()
    assert view["replayed_by"] == "alice" and view["replayed_at"] is not None


def test_the_admin_relay_sends_a_replay_byte_for_byte_with_its_key(runtime, api):
    letter_id = dead_letter(runtime, payload=b"\xff raw bytes as the broker refused them")
    assert api.post(f"/dead-letters/{letter_id}/replay").status_code == 202
    producer = RecordingProducer()
    assert OutboxRelay(runtime.database, producer, publisher="admin").publish_pending() == 1
    assert producer.sent == [("cdrflow.file-accepted", FILE_ID, b"\xff raw bytes as the broker refused them")]
    assert OutboxRelay(runtime.database, RecordingProducer(), publisher="invoicer").publish_pending() == 0


def test_a_second_replay_is_refused_saying_when_and_by_whom(runtime, api):
    letter_id = dead_letter(runtime)
    assert api.post(f"/dead-letters/{letter_id}/replay", headers={"x-operator": "alice"}).status_code == 202
    again = api.post(f"/dead-letters/{letter_id}/replay", headers={"x-operator": "bob"})
    assert again.status_code == 409
    message = again.json()["error"]
    assert f"dead letter {letter_id} was replayed by alice at " in message and "replayed once" in message
    assert len(outbox(runtime)) == 1
    assert api.get(f"/dead-letters/{letter_id}").json()["replayed_by"] == "alice"


def test_a_replay_racing_past_the_check_is_refused_by_the_outbox_entry(runtime, api):
    letter_id = dead_letter(runtime)
    with runtime.database.transaction() as session:  # as if another replay had queued it first
        add_raw_to_outbox(session, "cdrflow.file-accepted", FILE_ID, b"{}", entry_id=f"replay-{letter_id}",
                          publisher="admin")
    refused = api.post(f"/dead-letters/{letter_id}/replay")
    assert refused.status_code == 409 and "already queued" in refused.json()["error"]
    assert api.get(f"/dead-letters/{letter_id}").json()["replayed_at"] is None


@pytest.mark.parametrize("path", ["/dead-letters/999", "/dead-letters/nine"])
def test_an_unknown_dead_letter_is_404_with_a_clear_message(runtime, api, path):
    for response in (api.get(path), api.post(f"{path}/replay")):
        assert response.status_code == 404
        assert response.json()["error"].startswith("no dead letter ")
        assert "cdrflow dlq list" in response.json()["error"]
    assert outbox(runtime) == []


def test_the_table_aligns_columns_and_cuts_long_errors_to_fit():
    rows = [("1", "parser", "file-accepted", "-", "2026-10-02 09:30", "-", "E: " + "x" * 500),
            ("12", "rater", "record-parsed", "-", "2026-10-02 09:31", "alice", "E: short\nsecond line")]
    header, first, second = table(rows, width=100)
    assert header.startswith("ID  SERVICE  TOPIC ") and header.index("ERROR") == first.index("E: x")
    assert len(first) == 100 and first.endswith("x…")
    assert second.endswith("E: short second line")


@pytest.fixture
def cli(api, monkeypatch):
    client = AdminClient("http://testserver")
    client._http = api  # Starlette's TestClient is an httpx.Client
    monkeypatch.setattr(cdrflow.cli_dlq, "_admin", lambda ctx: client)
    monkeypatch.setenv("COLUMNS", "140")
    return lambda *args: CliRunner().invoke(main, ["dlq", *args])


def test_dlq_list_show_and_replay_once_from_the_command_line(runtime, cli):
    letter_id = dead_letter(runtime, error="Unknown file: " + "very long reason " * 40)
    listed = cli("list", "--service", "parser")
    assert listed.exit_code == 0, listed.output
    header, row = listed.output.splitlines()
    assert header.split() == ["ID", "SERVICE", "TOPIC", "FILE", "FAILED", "REPLAYED", "BY", "ERROR"]
    assert row.split()[:5] == [str(letter_id), "parser", "file-accepted", FILE_ID, "2026-10-02"]
    assert row.endswith("…") and len(row) == 140 and row.index("UnknownFileError: ") == header.index("ERROR")
    assert '"payload"' not in cli("list", "--json").output
    shown = cli("show", str(letter_id))
    assert "payload (utf-8," in shown.output and FILE_ID in shown.output
    replayed = cli("replay", str(letter_id), "--reason", "fixed", "--operator", "alice")
    assert replayed.exit_code == 0 and "queued for cdrflow.file-accepted" in replayed.output
    again = cli("replay", str(letter_id), "--operator", "bob")
    assert again.exit_code == 1 and "replayed by alice" in again.output
    assert cli("list", "--service", "invoicer").output == "no dead letters of invoicer\n"
