"""The dedupe service's handlers over SQLite: copies held whatever channel and packing they came
by, the carrier rule "same name", and operator decisions recorded once, with who, when and why."""

import gzip

import pytest
from sqlalchemy import func, select

from cdrflow.db.models import Carrier, File, FileDecision, FingerprintClaim
from cdrflow.events import Event, EventType
from cdrflow.intake import FileMetadata, file_arrived
from cdrflow_app.demo import SAMPLES
from services.dedupe.service import Dedupe
from tests.unit.test_handlers import handle, runtime  # noqa: F401  (fixture)

CSV = (SAMPLES / "gamma-cdr-20261001.csv").read_bytes()


def arrive(runtime, data=CSV, name="gamma-cdr-20261001.csv", channel="upload", carrier="gamma"):
    stored = runtime.store.put_bytes(data)
    meta = FileMetadata(carrier, "cdr", "daily", "outbound", name, channel)
    [decision] = handle(runtime, Dedupe(runtime).on_file_arrived, file_arrived(stored, meta, f"cdrflow/{channel}"))
    return decision


def command(runtime, name, file_id, operator="sam", reason="checked with the carrier"):
    event = Event(type=EventType.ADMIN_COMMAND, source="cdrflow/admin", subject=file_id,
                  data={"command": name, "file_id": file_id, "operator": operator, "reason": reason})
    return handle(runtime, Dedupe(runtime).on_admin_command, event)


def file(runtime, file_id):
    with runtime.database.transaction() as session:
        f = session.get(File, file_id)
        session.expunge(f)
        return f


def test_an_identical_file_resent_by_email_ftp_and_upload_is_held_each_time_listing_every_earlier_copy(runtime):
    first = arrive(runtime, channel="mailgate")
    by_ftp = arrive(runtime, channel="collector")
    by_upload = arrive(runtime, channel="upload")
    assert first.type == EventType.FILE_ACCEPTED
    assert by_ftp.type == by_upload.type == EventType.FILE_HELD
    assert [(c["file_id"], c["channel"], c["carrier"], c["status"]) for c in by_upload.data["candidates"]] == [
        (first.subject, "mailgate", "gamma", "accepted"), (by_ftp.subject, "collector", "gamma", "held")]
    assert by_upload.data["hold_reason"] == "duplicate"
    assert file(runtime, by_upload.subject).status == "held"


def test_the_same_csv_gzipped_is_held_as_a_copy_of_the_plain_one_and_both_byte_hashes_are_kept(runtime):
    plain = arrive(runtime)
    packed = arrive(runtime, gzip.compress(CSV), name="gamma-cdr-20261001.csv.gz")
    assert packed.type == EventType.FILE_HELD
    assert [c["file_id"] for c in packed.data["candidates"]] == [plain.subject]
    a, b = file(runtime, plain.subject), file(runtime, packed.subject)
    assert a.fingerprint != b.fingerprint  # the bytes as received: each file's address in the store
    assert a.content_fingerprint == b.content_fingerprint
    assert gzip.decompress(runtime.store.read_bytes(b.fingerprint)) == CSV


def test_a_copy_of_a_discarded_file_is_still_held(runtime):
    arrive(runtime)
    held = arrive(runtime)
    command(runtime, "discard", held.subject)
    again = arrive(runtime)
    assert again.type == EventType.FILE_HELD
    assert {c["status"] for c in again.data["candidates"]} == {"accepted", "discarded"}


def test_same_name_with_different_content_is_accepted_while_the_carrier_rule_is_off(runtime):
    arrive(runtime)
    assert arrive(runtime, CSV + b"+441632960001,01174960123,2026-10-01T23:00:00,5,0.0001\n").type == \
        EventType.FILE_ACCEPTED


def test_same_name_with_different_content_is_held_as_same_name_when_the_carrier_rule_is_on(runtime):
    with runtime.database.transaction() as session:
        session.get(Carrier, "gamma").hold_same_name = True
    first = arrive(runtime)
    other_carrier = arrive(runtime, CSV + b"\n", carrier="btw")
    changed = arrive(runtime, CSV + b"+441632960001,01174960123,2026-10-01T23:00:00,5,0.0001\n")
    assert other_carrier.type == EventType.FILE_ACCEPTED  # the rule is per carrier
    assert changed.type == EventType.FILE_HELD
    assert changed.data["hold_reason"] == "same name"
    assert [c["file_id"] for c in changed.data["candidates"]] == [first.subject]
    assert file(runtime, changed.subject).hold_reason == "same name"


def test_release_records_who_when_and_why_and_sends_the_file_on_as_a_new_file(runtime):
    arrive(runtime)
    held = arrive(runtime)
    [accepted] = command(runtime, "release", held.subject, reason="monthly re-issue, agreed")
    assert accepted.type == EventType.FILE_ACCEPTED and accepted.data["released"] is True
    with runtime.database.transaction() as session:
        decision = session.get(FileDecision, held.subject)
        assert (decision.command, decision.operator, decision.reason) == ("release", "sam", "monthly re-issue, agreed")
        assert decision.decided_at is not None
        f = session.get(File, held.subject)
        assert (f.status, f.status_reason) == ("accepted", "released by sam: monthly re-issue, agreed")


def test_a_repeated_release_changes_nothing_and_repeats_the_same_event(runtime):
    arrive(runtime)
    held = arrive(runtime)
    [first] = command(runtime, "release", held.subject)
    [again] = command(runtime, "release", held.subject, operator="kim", reason="again")
    assert again.id == first.id
    with runtime.database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(FileDecision)) == 1
        assert session.get(FileDecision, held.subject).operator == "sam"


def test_discard_after_release_and_release_of_a_file_never_held_change_nothing(runtime):
    accepted = arrive(runtime)
    held = arrive(runtime)
    command(runtime, "release", held.subject)
    assert command(runtime, "discard", held.subject) == []
    assert command(runtime, "release", accepted.subject) == []
    assert file(runtime, held.subject).status == "accepted"
    assert file(runtime, accepted.subject).status == "accepted"
    with runtime.database.transaction() as session:
        assert session.get(FileDecision, accepted.subject) is None


def test_a_copy_loses_to_a_claim_committed_by_another_process_even_if_it_saw_no_earlier_file(runtime, monkeypatch):
    """The claim table, not a query of earlier files, decides who came first."""
    first = arrive(runtime)
    with runtime.database.transaction() as session:
        assert session.get(FingerprintClaim, file(runtime, first.subject).content_fingerprint).file_id == first.subject
    monkeypatch.setattr(Dedupe, "_earlier", staticmethod(lambda session, f, same, claim: [claim.file_id]))
    assert arrive(runtime).type == EventType.FILE_HELD


@pytest.mark.parametrize("name", ["release", "discard", "retry"])
def test_a_command_naming_a_file_not_in_the_database_is_not_yet_visible(runtime, name):
    """Retried by the service loop for a bounded time (the file may be committed any moment),
    then dead-lettered with this reason: never dropped, never waited on forever."""
    from cdrflow.errors import NotYetVisibleError

    with pytest.raises(NotYetVisibleError, match="which is not in the database"):
        command(runtime, name, "00000000-0000-0000-0000-000000000000")


def test_the_same_name_rule_is_set_per_carrier_from_the_cli_and_logged(runtime):
    from click.testing import CliRunner

    from cdrflow_app.cli import main
    from cdrflow.db.models import ReferenceChange

    env = {"CDRFLOW_DATA_DIR": str(runtime.settings.data_dir)}
    result = CliRunner().invoke(main, ["carriers", "rules", "gamma", "--hold-same-name"], env=env)
    assert result.exit_code == 0, result.output
    arrive(runtime)
    assert arrive(runtime, CSV + b"\n").data["hold_reason"] == "same name"
    result = CliRunner().invoke(main, ["carriers", "rules", "nope", "--hold-same-name"], env=env)
    assert result.exit_code == 1 and "unknown carrier 'nope'" in result.output
    with runtime.database.transaction() as session:
        assert session.get(Carrier, "btw").hold_same_name is False
        assert session.query(ReferenceChange).filter_by(key="gamma", detail="hold same name: on").count() == 1
