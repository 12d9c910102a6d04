"""Overlapping calls: usage re-sent in another file (a monthly file repeating the daily files, a
file repeating a row) is stored but set aside, never billed twice, unless an operator says bill."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from cdrflow.db.models import Call, File, Invoice
from cdrflow.events import Event, EventType
from cdrflow.intake import FileMetadata, file_arrived
from services.dedupe.service import Dedupe
from services.invoicer.overlap import Owner, mark_overlaps, overlap_summary, usage_key
from services.invoicer.service import Invoicer
from services.parser.service import Parser
from services.rater.service import Rater
from tests.unit.test_handlers import handle, runtime  # noqa: F401  (fixture)

HEADER = b"cli,dialled,start,duration,cost\n"
DAY_CALLS = {  # ACME's calls, two a day: UK peak 60 s and 120 s
    day: [f"+441632960001,01174960123,2026-10-0{day}T10:00:00,60,0.0010",
          f"+441632960002,01174960555,2026-10-0{day}T11:00:00,120,0.0020"]
    for day in (1, 2, 3)
}
NEW = ["+441632960001,01174960123,2026-10-04T10:00:00,60,0.0010",
       "+441632960002,01174960555,2026-10-04T11:00:00,120,0.0020"]


def csv(lines):
    return HEADER + "".join(line + "\n" for line in lines).encode()


def through(runtime, data, name, period="daily"):
    return accepted_and_rated(runtime, data, name, period).subject


def accepted_and_rated(runtime, data, name, period="daily"):
    stored = runtime.store.put_bytes(data)
    event = file_arrived(stored, FileMetadata("gamma", "cdr", period, "outbound", name, "collector"), "cdrflow/collector")
    [decision] = handle(runtime, Dedupe(runtime).on_file_arrived, event)
    assert decision.type == EventType.FILE_ACCEPTED
    for parsed in handle(runtime, Parser(runtime).on_file_accepted, decision):
        for rated in handle(runtime, Rater(runtime).on_record_parsed, parsed):
            handle(runtime, Invoicer(runtime).on_call_rated, rated)
    return decision


def bill(runtime, period="2026-10", run_id="6f1c1a52-9a53-4d55-9d7f-2c0f6f0f5a11"):
    start = datetime.strptime(period + "-01", "%Y-%m-%d").date()
    end = (start + timedelta(days=32)).replace(day=1)
    handle(runtime, Invoicer(runtime).on_run_closed, Event(
        type=EventType.RUN_CLOSED, source="cdrflow/admin", subject=f"ACME/{period}", data={
            "run_id": run_id, "customer": "ACME", "period": period, "period_start": start.isoformat(),
            "period_end": end.isoformat(), "trigger": "manual"}))
    with runtime.database.transaction() as session:
        invoice = session.scalar(select(Invoice).where(Invoice.period_start == start))
        return invoice.charges[0].quantity, invoice.total


def test_the_usage_key_is_the_same_instant_whatever_the_offset_and_changes_with_each_field():
    utc = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
    paris = utc.astimezone(timezone(timedelta(hours=2)))
    base = usage_key("gamma", "441", "442", utc, 60)
    assert usage_key("gamma", "441", "442", paris, 60) == base
    assert base[0] == int(utc.timestamp())  # leads with the start second: a file's claims sit together
    for other in (("btw", "441", "442", utc, 60), ("gamma", "449", "442", utc, 60), ("gamma", "441", "449", utc, 60),
                  ("gamma", "441", "442", utc + timedelta(microseconds=1), 60), ("gamma", "441", "442", utc, 61)):
        assert usage_key(*other) != base
    assert -(2**63) <= base[1] < 2**63  # fits a signed 64-bit column
    with pytest.raises(ValueError, match="naive"):
        usage_key("gamma", "441", "442", utc.replace(tzinfo=None), 60)


def test_a_call_overlaps_only_when_its_usage_is_held_by_another_file_and_row():
    rows = [{"file_id": "m", "row": 2}, {"file_id": "m", "row": 3}]
    owners = {(1, 10): Owner("d1", 5), (1, 20): Owner("m", 3)}
    assert mark_overlaps(rows, [(1, 10), (1, 20)], owners, "skip") == 1
    assert rows == [{"file_id": "m", "row": 2, "overlaps_file_id": "d1", "set_aside": True},
                    {"file_id": "m", "row": 3, "overlaps_file_id": None, "set_aside": False}]
    assert mark_overlaps(rows, [(1, 10), (1, 20)], owners, "bill") == 1 and rows[0]["set_aside"] is False
    assert overlap_summary({"d2": 2, "d1": 4}, {"d1": "a.csv", "d2": "b.csv"}) == "overlaps 6 call(s) of file(s) a.csv, b.csv"


def test_a_monthly_file_overlapping_three_daily_files_bills_only_its_new_calls(runtime):
    daily = [through(runtime, csv(DAY_CALLS[d]), f"gamma-2026100{d}.csv") for d in (1, 2, 3)]
    monthly = through(runtime, csv(DAY_CALLS[1] + DAY_CALLS[2] + DAY_CALLS[3] + NEW), "gamma-202610.csv", "monthly")
    with runtime.database.transaction() as session:
        f = session.get(File, monthly)
        assert f.status == "rated" and f.calls == 8 and f.overlapping_calls == 6
        assert f.overlaps == ("overlaps 6 call(s) of file(s) gamma-20261001.csv, gamma-20261002.csv, "
                              "gamma-20261003.csv")
        aside = session.execute(select(Call.row, Call.overlaps_file_id).where(Call.file_id == monthly, Call.set_aside)
                                .order_by(Call.row)).all()
        assert aside == [(2, daily[0]), (3, daily[0]), (4, daily[1]), (5, daily[1]), (6, daily[2]), (7, daily[2])]
        assert session.scalar(select(func.count()).select_from(Call).where(Call.overlaps_file_id.is_not(None))) == 6
    quantity, _ = bill(runtime)
    assert quantity == 8  # 6 daily calls + the monthly file's 2 new ones, each once


def test_a_file_overlapping_itself_in_part_sets_aside_the_repeated_rows_and_a_replay_adds_nothing(runtime):
    lines = DAY_CALLS[1] + [DAY_CALLS[1][0]]  # row 4 repeats row 2
    accepted = accepted_and_rated(runtime, csv(lines), "gamma-20261001.csv")
    file_id = accepted.subject
    with runtime.database.transaction() as session:
        f = session.get(File, file_id)
        assert (f.calls, f.overlapping_calls) == (3, 1)
        assert f.overlaps == "overlaps 1 call(s) of file(s) gamma-20261001.csv"
        assert session.execute(select(Call.row).where(Call.set_aside)).scalars().all() == [4]
        f.status = "accepted"  # as if the parser crashed before committing: everything is replayed
    for parsed in handle(runtime, Parser(runtime).on_file_accepted, accepted):
        for rated in handle(runtime, Rater(runtime).on_record_parsed, parsed):
            handle(runtime, Invoicer(runtime).on_call_rated, rated)
    with runtime.database.transaction() as session:
        f = session.get(File, file_id)
        assert (f.calls, f.overlapping_calls) == (3, 1)
    assert bill(runtime)[0] == 2


def command(runtime, name, file_id):
    return Event(type=EventType.ADMIN_COMMAND, source="cdrflow/admin", subject=file_id,
                 data={"command": name, "file_id": file_id, "operator": "sam", "reason": "carrier re-rated them"})


def test_an_operator_may_bill_a_files_overlapping_calls_anyway_and_skip_them_again(runtime):
    through(runtime, csv(DAY_CALLS[1]), "gamma-20261001.csv")
    monthly = through(runtime, csv(DAY_CALLS[1] + NEW), "gamma-202610.csv", "monthly")
    for name, expected_aside in (("bill-overlaps", 0), ("bill-overlaps", 0), ("skip-overlaps", 2),
                                 ("bill-overlaps", 0)):
        assert handle(runtime, Invoicer(runtime).on_admin_command, command(runtime, name, monthly)) == []
        assert handle(runtime, Dedupe(runtime).on_admin_command, command(runtime, name, monthly)) == []
        with runtime.database.transaction() as session:
            assert session.scalar(select(func.count()).select_from(Call).where(Call.set_aside)) == expected_aside
            assert session.get(File, monthly).overlap_policy == name.split("-")[0]
    assert bill(runtime)[0] == 6  # 2 daily + 2 overlapping billed anyway + 2 new


def test_a_file_whose_policy_is_bill_stores_later_overlaps_unset_aside(runtime):
    through(runtime, csv(DAY_CALLS[1]), "gamma-20261001.csv")
    with runtime.database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Call).where(Call.set_aside)) == 0
    # (the policy is read per batch: a file set to bill before its batches arrive bills them)
    stored = runtime.store.put_bytes(csv(DAY_CALLS[1] + NEW))
    event = file_arrived(stored, FileMetadata("gamma", "cdr", "monthly", "outbound", "m.csv", "upload"), "cdrflow/admin")
    [accepted] = handle(runtime, Dedupe(runtime).on_file_arrived, event)
    with runtime.database.transaction() as session:
        session.get(File, accepted.subject).overlap_policy = "bill"
    for parsed in handle(runtime, Parser(runtime).on_file_accepted, accepted):
        for rated in handle(runtime, Rater(runtime).on_record_parsed, parsed):
            handle(runtime, Invoicer(runtime).on_call_rated, rated)
    with runtime.database.transaction() as session:
        assert session.get(File, accepted.subject).overlapping_calls == 2
        assert session.scalar(select(func.count()).select_from(Call).where(Call.set_aside)) == 0
