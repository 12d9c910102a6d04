import pytest

from cdrflow.errors import BadEventError
from cdrflow.events import Event, EventType, event_id


def test_envelope_round_trips_through_bytes():
    event = Event(type=EventType.FILE_ARRIVED, source="cdrflow/admin", subject="f1", data={"a": 1})
    again = Event.from_bytes(event.to_bytes())
    assert again == event


def test_event_ids_are_stable_for_the_same_parts():
    assert event_id("x", "f1", 3) == event_id("x", "f1", 3)
    assert event_id("x", "f1", 3) != event_id("x", "f1", 4)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "empty message"),
        (b"\xff\xfe", "not JSON"),
        (b"[1,2]", "not an event envelope"),
        (b'{"specversion":"1.0","id":"1","source":"s","type":"t","time":"2026-01-01T00:00:00+00:00"}', "lacks data"),
        (b'{"specversion":"0.3","id":"1","source":"s","type":"t","time":"x","data":{}}', "specversion"),
        (b'{"specversion":"1.0","id":"1","source":"s","type":"t","time":"yesterday","data":{}}', "not ISO 8601"),
    ],
)
def test_malformed_messages_raise_bad_event_error_naming_the_problem(payload, message):
    with pytest.raises(BadEventError, match=message):
        Event.from_bytes(payload)


def test_require_names_the_missing_fields():
    event = Event(type="t", source="s", subject="", data={"a": 1})
    with pytest.raises(BadEventError, match="lacks data field\\(s\\): b, c"):
        event.require("a", "b", "c")
