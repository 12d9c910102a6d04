"""The calls ledger on the real PostgreSQL: every unit test of tests/unit/test_ledger.py runs here
too (imported below, so pytest collects them in this module, where ``database`` is this suite's
PostgreSQL database), through COPY and the claim upsert; and two invoicers storing overlapping
files at the same moment agree, through the database, on one owner per usage."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select, text

from cdrflow.db.models import Call, CallUsageClaim
from cdrflow.errors import DatabaseError
from services.invoicer.ledger import store_calls
from tests.integration.conftest import wait_until
from tests.unit.test_ledger import (  # noqa: F401  (collected here: the same behaviour on PostgreSQL)
    add_file,
    call,
    frame,
    store,
    stored,
    test_a_batch_not_in_the_ledgers_shape_is_refused_before_anything_is_stored,
    test_a_batch_stored_again_adds_nothing_and_keeps_its_first_marks,
    test_a_driver_error_is_raised_as_sqlalchemy_would_raise_it,
    test_a_call_stored_reads_back_as_the_orm_would_have_written_it,
    test_a_call_whose_usage_an_earlier_file_holds_overlaps_that_file_and_is_set_aside,
    test_a_failed_batch_leaves_neither_claims_nor_calls,
    test_a_file_that_bills_overlaps_stores_them_marked_but_not_set_aside,
    test_a_start_in_any_zone_is_the_same_instant_and_the_same_usage,
    test_a_usage_repeated_within_one_batch_overlaps_its_first_row_in_the_same_file,
    test_an_empty_batch_stores_nothing,
    test_an_unknown_overlap_policy_is_refused,
    test_counts_are_kept_per_file_of_the_batch,
    test_each_field_of_the_usage_tells_two_calls_apart,
    test_money_in_micros_reads_back_as_the_exact_decimal,
    test_text_and_nulls_are_stored_exactly_as_given,
    test_the_policy_is_asked_once_per_file_of_the_batch,
    test_the_claimed_key_is_usage_key_so_calls_stored_before_the_ledger_are_still_found,
    test_the_same_usage_of_two_files_in_one_batch_is_claimed_by_the_first_in_batch_order,
    test_two_batches_in_one_transaction_are_both_stored,
    usage,
)


def skip(_file_id):
    return "skip"


def waiting_on_a_lock(database) -> int:
    """Sessions of this database blocked on a lock (another transaction's uncommitted claim)."""
    with database.engine.connect() as connection:
        return connection.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )).scalar()


def in_thread(target):
    """Run ``target`` in a thread; its result or exception is in the returned dict after join."""
    outcome: dict = {}

    def run():
        try:
            outcome["result"] = target()
        except BaseException as exc:  # noqa: BLE001 (re-raised by the test)
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def usages(database, *file_ids):
    """Per usage (cli, start) of these files' calls: the (file, row) of the calls that overlap
    nothing (``owners``), and the files the others overlap (``overlap``)."""
    with database.transaction() as session:
        calls = session.execute(select(Call.cli, Call.start, Call.file_id, Call.row, Call.overlaps_file_id)
                                .where(Call.file_id.in_(file_ids))).all()
    by_usage: dict = {}
    for cli, start, file_id, row, overlaps in calls:
        entry = by_usage.setdefault((cli, start), {"owners": [], "overlap": []})
        if overlaps is None:
            entry["owners"].append((file_id, row))
        else:
            entry["overlap"].append(overlaps)
    return by_usage


def test_a_connection_lost_while_storing_is_the_database_unavailable_not_a_bad_batch(database):
    file_id = add_file(database)
    with pytest.raises(DatabaseError, match="database unavailable"), database.transaction() as session:
        pid = session.connection().connection.driver_connection.info.backend_pid
        with database.engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        store_calls(session, frame(call(file_id, 2)), overlap_policy_of=skip)
    assert store(database, call(file_id, 2)).inserted == 1  # the pool gave a live connection again


def test_a_second_invoicer_waits_for_the_first_and_finds_its_calls_overlapping(database):
    first, second = add_file(database, "daily.csv"), add_file(database, "monthly.csv")
    with database.transaction() as session:
        store_calls(session, frame(*(call(first, 2 + n, **usage(n)) for n in range(100))), overlap_policy_of=skip)
        # the first transaction holds its claims, uncommitted, while the second one stores
        thread, outcome = in_thread(lambda: store(database, *(call(second, 2 + n, **usage(50 + n)) for n in range(100))))
        wait_until("the second invoicer to wait for the first one's claims", lambda: waiting_on_a_lock(database), 30)
    thread.join(30)
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert (result.inserted, result.overlapping) == (100, 50)
    assert stored(database, second) == [(2 + n, first if n < 50 else None, n < 50) for n in range(100)]
    with database.transaction() as session:
        held = session.execute(select(CallUsageClaim.file_id, func.count()).group_by(CallUsageClaim.file_id)).all()
    assert sorted(held) == sorted([(first, 100), (second, 50)])


def test_when_the_first_invoicer_rolls_back_the_waiting_one_claims_the_usage(database):
    first, second = add_file(database, "daily.csv"), add_file(database, "monthly.csv")
    with pytest.raises(RuntimeError), database.transaction() as session:
        store_calls(session, frame(*(call(first, 2 + n, **usage(n)) for n in range(10))), overlap_policy_of=skip)
        thread, outcome = in_thread(lambda: store(database, *(call(second, 2 + n, **usage(n)) for n in range(10))))
        wait_until("the second invoicer to wait for the first one's claims", lambda: waiting_on_a_lock(database), 30)
        raise RuntimeError("the first invoicer crashes before committing")
    thread.join(30)
    assert "error" not in outcome, outcome.get("error")
    assert (outcome["result"].inserted, outcome["result"].overlapping) == (10, 0)
    assert stored(database, first) == []
    assert stored(database, second) == [(2 + n, None, False) for n in range(10)]


@pytest.mark.parametrize("batch", [250, 2_000])
def test_two_invoicers_storing_overlapping_files_at_once_end_with_one_owner_per_usage(database, batch):
    """Two files of 4,000 calls, every other one a usage the other file has too, stored batch by
    batch (a transaction a batch) by two threads started together; one file has the shared usages
    in the other's reverse order, so the two meet half-way and claim the same keys at the same
    moments. Every shared usage has exactly one call that owns it (the one whose claim the
    database kept), the other overlaps the owner's file; no deadlock, nothing lost."""
    a, b = add_file(database, "a.csv"), add_file(database, "b.csv")

    def calls_of(file_id, own, forwards):
        return [call(file_id, 2 + n, **usage((n if forwards else 3_998 - n) if n % 2 == 0 else own + n))
                for n in range(4_000)]

    files = {a: calls_of(a, 10_000, forwards=True), b: calls_of(b, 20_000, forwards=False)}
    barrier = threading.Barrier(2)

    def invoicer(file_id):
        calls = files[file_id]
        barrier.wait()
        for lo in range(0, len(calls), batch):
            store(database, *calls[lo:lo + batch])

    runs = [in_thread(lambda f=f: invoicer(f)) for f in files]
    for thread, outcome in runs:
        thread.join(120)
        assert "error" not in outcome, outcome.get("error")

    by_usage = usages(database, a, b)
    with database.transaction() as session:
        claims = {(f, r) for f, r in session.execute(select(CallUsageClaim.file_id, CallUsageClaim.row))}
    assert len(by_usage) == len(claims) == 6_000
    for entry in by_usage.values():
        [owner] = entry["owners"]  # exactly one call owns each usage ...
        assert owner in claims  # ... the one whose claim the database kept
        assert entry["overlap"] in ([], [owner[0]])  # the other call overlaps the owner's file
    assert sum(len(entry["overlap"]) for entry in by_usage.values()) == 2_000
    with database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Call).where(Call.set_aside)) == 2_000
