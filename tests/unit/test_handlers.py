"""The services' handlers driven directly (no broker) over SQLite: every event they emit
matches its schema, repeats are no-ops, and the sample files give the known invoice."""

import uuid
from decimal import ROUND_HALF_UP, Decimal

import orjson
import pytest
from sqlalchemy import func, select

from cdrflow.bus import RETRACT
from cdrflow.db import migrate
from cdrflow.db.models import Call, CallUsageClaim, File, Invoice, OutboxEntry, RejectedRow
from cdrflow.errors import NotYetVisibleError
from cdrflow.events import Event, EventType
from cdrflow.intake import FileMetadata, file_arrived
from cdrflow.runtime import Runtime
from cdrflow.settings import Settings
from services.dedupe.service import Dedupe
from services.invoicer.service import Invoicer
from services.parser.service import Parser
from services.rater.service import Rater
from tests.schemas import validate_event
from cdrflow_app.demo import SAMPLES, load_sample_reference


@pytest.fixture
def runtime(tmp_path):
    settings = Settings(data_dir=tmp_path, batch_size=3)
    migrate(settings.effective_database_url)
    rt = Runtime(settings, "test")
    with rt.database.transaction() as session:
        load_sample_reference(session, rt.store)
    yield rt
    rt.database.dispose()


def handle(runtime, handler, event):
    validate_event(event.to_dict())
    out = []
    with runtime.database.transaction() as session:
        for o in handler(event, session):
            if o is RETRACT:  # as the service loop does: what was yielded so far is taken back
                out.clear()
            else:
                out.append(o)
    for o in out:
        validate_event(o.event.to_dict())
    return [o.event for o in out]


def arrive(runtime, name, carrier="gamma"):
    stored = runtime.store.put_bytes((SAMPLES / name).read_bytes())
    meta = FileMetadata(carrier, "cdr", "daily", "outbound", name, "upload")
    return file_arrived(stored, meta, "cdrflow/admin")


def through_pipeline(runtime, name, carrier):
    dedupe, parser, rater, invoicer = Dedupe(runtime), Parser(runtime), Rater(runtime), Invoicer(runtime)
    [decision] = handle(runtime, dedupe.on_file_arrived, arrive(runtime, name, carrier))
    if decision.type != EventType.FILE_ACCEPTED:
        return decision
    for parsed in handle(runtime, parser.on_file_accepted, decision):
        for rated in handle(runtime, rater.on_record_parsed, parsed):
            handle(runtime, invoicer.on_call_rated, rated)
    return decision


def test_sample_files_become_the_known_october_invoice(runtime):
    through_pipeline(runtime, "gamma-cdr-20261001.csv", "gamma")
    through_pipeline(runtime, "btw-cdr-20261002.csv", "btw")
    held = through_pipeline(runtime, "gamma-cdr-20261001-resent.csv", "gamma")
    assert held.type == EventType.FILE_HELD
    assert [c["original_name"] for c in held.data["candidates"]] == ["gamma-cdr-20261001.csv"]

    run = Event(type=EventType.RUN_CLOSED, source="cdrflow/admin", subject="ACME/2026-10", data={
        "run_id": "6f1c1a52-9a53-4d55-9d7f-2c0f6f0f5a11", "customer": "ACME", "period": "2026-10",
        "period_start": "2026-10-01", "period_end": "2026-11-01", "trigger": "manual"})
    handle(runtime, Invoicer(runtime).on_run_closed, run)
    handle(runtime, Invoicer(runtime).on_run_closed, run)  # a repeat issues nothing new
    with runtime.database.transaction() as session:
        [invoice] = session.scalars(select(Invoice)).all()
        # gamma: 125 s UK peak 0.0313 + 60 s mobile 0.0400 + 300 s France (0.15 + set-up 0.01) 0.1600
        #        + 1 s UK peak 0.0003
        # btw:   240 s UK weekend 0.0200 + 75 s Ireland (78 s at 30/6: 0.0455 + 0.01) 0.0555
        #        + 100 s UK weekend 0.0083 (1 Nov excluded)
        charges = ["0.0313", "0.0400", "0.1600", "0.0003", "0.0200", "0.0555", "0.0083"]
        exact = sum(map(Decimal, charges))  # 0.3154: rounded once, half up, to the penny
        net = exact.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
        vat = (net * Decimal("0.20")).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)  # ACME: standard rate
        assert (net, vat) == (Decimal("0.32"), Decimal("0.06"))  # 20% of 32p is 6.4p
        assert (invoice.net, invoice.tax, invoice.total) == (net, vat, net + vat)
        [line] = invoice.charges
        assert (line.description, line.quantity, line.amount, line.kind) == ("Call Charges", 7, net, "calls")
        [entry] = session.scalars(select(OutboxEntry)).all()
        issued = orjson.loads(entry.payload)
        validate_event(issued)
        assert (issued["data"]["net"], issued["data"]["tax"], issued["data"]["total"]) == ("0.32", "0.06", "0.38")
        assert runtime.store.read_bytes(invoice.calls_csv).count(b"\n") == 8  # header + 7 calls
        statuses = dict(session.execute(select(File.original_name, File.status)).all())
        assert statuses == {"gamma-cdr-20261001.csv": "rated", "btw-cdr-20261002.csv": "rated",
                            "gamma-cdr-20261001-resent.csv": "held"}
        [reject] = session.scalars(select(RejectedRow)).all()
        assert (reject.row, reject.reason) == (9, "start 'not-a-date' is not an ISO 8601 date-time")
        unmatched = session.scalars(select(Call).where(Call.status == "unmatched")).all()
        assert [c.cli for c in unmatched] == ["441999000000"]


def test_replaying_a_parsed_file_after_a_crash_stores_each_call_once(runtime):
    decision = through_pipeline(runtime, "btw-cdr-20261002.csv", "btw")
    # As if the parser crashed after emitting its batches but before committing "parsed":
    with runtime.database.transaction() as session:
        session.get(File, decision.data["file_id"]).status = "accepted"
    parser, rater, invoicer = Parser(runtime), Rater(runtime), Invoicer(runtime)
    for parsed in handle(runtime, parser.on_file_accepted, decision):
        for rated in handle(runtime, rater.on_record_parsed, parsed):
            handle(runtime, invoicer.on_call_rated, rated)
    with runtime.database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Call)) == 5
        assert session.get(File, decision.data["file_id"]).calls == 5


def test_a_repeated_file_arrived_event_repeats_the_same_decision(runtime):
    event = arrive(runtime, "btw-cdr-20261002.csv", "btw")
    first = handle(runtime, Dedupe(runtime).on_file_arrived, event)
    again = handle(runtime, Dedupe(runtime).on_file_arrived, event)
    assert [e.id for e in first] == [e.id for e in again]
    assert first[0].type == EventType.FILE_ACCEPTED


def test_release_of_a_held_file_accepts_it_and_discard_keeps_it_unbilled(runtime):
    dedupe = Dedupe(runtime)
    handle(runtime, dedupe.on_file_arrived, arrive(runtime, "btw-cdr-20261002.csv", "btw"))
    [held] = handle(runtime, dedupe.on_file_arrived, arrive(runtime, "btw-cdr-20261002.csv", "btw"))
    [third] = handle(runtime, dedupe.on_file_arrived, arrive(runtime, "btw-cdr-20261002.csv", "btw"))
    assert len(third.data["candidates"]) == 2

    def command(name, file_id):
        return Event(type=EventType.ADMIN_COMMAND, source="cdrflow/admin", subject=file_id,
                     data={"command": name, "file_id": file_id, "operator": "sam"})

    [released] = handle(runtime, dedupe.on_admin_command, command("release", held.subject))
    assert released.type == EventType.FILE_ACCEPTED and released.data["released"] is True
    assert handle(runtime, dedupe.on_admin_command, command("discard", third.subject)) == []
    with runtime.database.transaction() as session:
        assert session.get(File, third.subject).status == "discarded"
        assert session.get(File, third.subject).status_reason == "discarded by sam"


def test_a_parsed_file_is_announced_again_with_the_same_event_ids(runtime):
    """A crash after the parser's commit and before the broker acknowledged its events repeats
    file-accepted: the file is ``parsed`` by then, and the same events must come out again."""
    [accepted] = handle(runtime, Dedupe(runtime).on_file_arrived, arrive(runtime, "gamma-cdr-20261001.csv"))
    first = handle(runtime, Parser(runtime).on_file_accepted, accepted)
    with runtime.database.transaction() as session:
        assert session.get(File, accepted.subject).status == "parsed"
    again = handle(runtime, Parser(runtime).on_file_accepted, accepted)
    assert [e.id for e in again] == [e.id for e in first] and len(first) > 1
    assert [e.data for e in again] == [e.data for e in first]


def test_a_file_with_no_data_rows_fails_with_no_call_records_and_announces_nothing(runtime):
    stored = runtime.store.put_bytes(b"cli,dialled,start,duration\n\n\n")
    meta = FileMetadata("gamma", "cdr", "daily", "outbound", "empty.csv", "upload")
    [accepted] = handle(runtime, Dedupe(runtime).on_file_arrived, file_arrived(stored, meta, "cdrflow/admin"))
    assert handle(runtime, Parser(runtime).on_file_accepted, accepted) == []
    with runtime.database.transaction() as session:
        file = session.get(File, accepted.subject)
        assert (file.status, file.status_reason) == (
            "failed", "empty.csv: no call records: the file has no data rows (nothing but a header or blank lines)")


def test_a_file_whose_every_row_is_rejected_fails_with_its_first_reason_and_announces_nothing(runtime):
    stored = runtime.store.put_bytes(b"cli,dialled,start,duration\n+441632960001,0117,not-a-date,5\n"
                                     b"+441632960001,0117,2026-10-01T09:00:00,minus\n")
    meta = FileMetadata("gamma", "cdr", "daily", "outbound", "all-bad.csv", "upload")
    [accepted] = handle(runtime, Dedupe(runtime).on_file_arrived, file_arrived(stored, meta, "cdrflow/admin"))
    assert handle(runtime, Parser(runtime).on_file_accepted, accepted) == []  # RETRACT: no reject batch sent
    with runtime.database.transaction() as session:
        file = session.get(File, accepted.subject)
        assert file.status == "failed" and "2 of 2 rows rejected" in file.status_reason
        assert "first at line 2: start 'not-a-date' is not an ISO 8601 date-time" in file.status_reason


def test_a_file_is_rated_once_its_last_batch_is_stored_whatever_the_order_its_summary_came_in(runtime):
    """Batches travel on several partitions: the summary may be stored before them."""
    [accepted] = handle(runtime, Dedupe(runtime).on_file_arrived, arrive(runtime, "gamma-cdr-20261001.csv"))
    rated = [r for p in handle(runtime, Parser(runtime).on_file_accepted, accepted)
             for r in handle(runtime, Rater(runtime).on_record_parsed, p)]
    summary, *batches = sorted(rated, key=lambda e: e.data["part"] != "summary")
    assert len(batches) == 3  # 7 calls, batch size 3

    def status() -> tuple[str, int]:
        with runtime.database.transaction() as session:
            file = session.get(File, accepted.subject)
            return file.status, file.calls_stored

    handle(runtime, Invoicer(runtime).on_call_rated, summary)
    assert status() == ("parsed", 0)
    for n, batch in enumerate(reversed(batches), start=1):
        handle(runtime, Invoicer(runtime).on_call_rated, batch)
        handle(runtime, Invoicer(runtime).on_call_rated, batch)  # a repeat counts nothing
        assert status()[0] == ("rated" if n == len(batches) else "parsed")
    assert status() == ("rated", 7)
    with runtime.database.transaction() as session:
        assert session.get(File, accepted.subject).calls == 7


def test_a_call_rated_batch_of_a_file_not_in_the_database_stores_nothing(runtime):
    """calls.file_id has no foreign key checked per row (migration 0008): the invoicer's count on
    the file's row, in the same transaction, refuses the batch instead, and nothing stays stored."""
    [accepted] = handle(runtime, Dedupe(runtime).on_file_arrived, arrive(runtime, "gamma-cdr-20261001.csv"))
    rated = [r for p in handle(runtime, Parser(runtime).on_file_accepted, accepted)
             for r in handle(runtime, Rater(runtime).on_record_parsed, p)]
    batch = next(r for r in rated if r.data["part"] == "batch")
    stray = Event(type=batch.type, source=batch.source, subject="no-such-file", id=str(uuid.uuid4()),
                  data=batch.data | {"file_id": "00000000-0000-0000-0000-000000000000"})
    with pytest.raises(NotYetVisibleError, match="not in the database"):
        handle(runtime, Invoicer(runtime).on_call_rated, stray)
    with runtime.database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Call)) == 0
        assert session.scalar(select(func.count()).select_from(CallUsageClaim)) == 0
