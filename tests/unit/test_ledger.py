"""The calls ledger on SQLite: calls stored once per (file, row), overlapping usage marked against
the file that claimed it first (an earlier file, or the same batch), set aside by the file's
policy, money exact. tests/integration/test_ledger_postgres.py runs the same tests on PostgreSQL
(it imports them), plus two invoicers storing at once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from cdrflow.db import Database, migrate
from cdrflow.db.models import Call, CallUsageClaim, File
from cdrflow.db.upsert import insert_new
from cdrflow.money import to_micros
from services.invoicer.ledger import CALL_COLUMNS, store_calls
from services.invoicer.overlap import usage_key, usage_keys

T0 = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def database(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    migrate(url)
    db = Database(url)
    yield db
    db.dispose()


def add_file(database, name="f.csv", policy="skip"):
    file_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    with database.transaction() as session:
        session.add(File(id=file_id, fingerprint=uuid.uuid4().hex * 2, carrier="gamma", kind="cdr", period="daily",
                         direction="outbound", original_name=name, size=1, channel="upload", received_at=now,
                         status="parsed", updated_at=now, overlap_policy=policy))
    return file_id


def call(file_id, row, cli="441632960001", dialled="441174960123", start=T0, duration=60, **fields):
    """One rated call as the ledger takes it (money in integer micros)."""
    c = {"file_id": file_id, "row": row, "carrier": "gamma", "direction": "outbound", "cli": cli, "dialled": dialled,
         "start": start, "duration": duration, "answered": True, "charge_code": None, "account_code": None,
         "cdr_cost": 1000, "customer": "ACME", "tariff": "standard", "code": "UKL", "destination": "UK Local",
         "band": "peak", "billable_seconds": 60, "charge": 12_300, "cost": 1000, "status": "rated", "reason": None}
    return c | fields


def frame(*calls):
    return pl.DataFrame(list(calls), schema=CALL_COLUMNS)


def usage(n):
    """The n-th distinct usage: a call a second apart."""
    return {"cli": f"4416329{n:05d}", "start": T0 + timedelta(seconds=n)}


def store(database, *calls, policies=None):
    with database.transaction() as session:
        return store_calls(session, frame(*calls),
                           overlap_policy_of=lambda f: (policies or {}).get(f, "skip"))


def stored(database, file_id):
    with database.transaction() as session:
        return session.execute(select(Call.row, Call.overlaps_file_id, Call.set_aside)
                               .where(Call.file_id == file_id).order_by(Call.row)).all()


def claims(database):
    with database.transaction() as session:
        return session.execute(select(CallUsageClaim.file_id, CallUsageClaim.row)
                               .order_by(CallUsageClaim.file_id, CallUsageClaim.row)).all()


def test_a_batch_stored_again_adds_nothing_and_keeps_its_first_marks(database):
    daily, monthly = add_file(database, "d.csv"), add_file(database, "m.csv")
    store(database, call(daily, 2, **usage(1)))
    batch = [call(monthly, 2, **usage(1)), call(monthly, 3, **usage(2))]
    first = store(database, *batch)
    again = store(database, *batch)  # as after a crash between commit and offset
    assert (first.inserted, first.repeated, first.overlapping) == (2, 0, 1)
    assert (again.inserted, again.repeated, again.overlapping) == (0, 2, 1)
    assert stored(database, monthly) == [(2, daily, True), (3, None, False)]
    assert claims(database) == sorted([(daily, 2), (monthly, 3)])


def test_a_call_whose_usage_an_earlier_file_holds_overlaps_that_file_and_is_set_aside(database):
    daily, monthly = add_file(database, "d.csv"), add_file(database, "m.csv")
    assert store(database, call(daily, 2, **usage(1)), call(daily, 3, **usage(2))).overlapping == 0
    result = store(database, call(monthly, 2, **usage(2)), call(monthly, 3, **usage(3)))
    assert result.files[monthly].overlapping == 1
    assert stored(database, daily) == [(2, None, False), (3, None, False)]
    assert stored(database, monthly) == [(2, daily, True), (3, None, False)]


def test_each_field_of_the_usage_tells_two_calls_apart(database):
    first, second = add_file(database), add_file(database)
    base = call(first, 2)
    store(database, base)
    others = [{"cli": "441632960009"}, {"dialled": "441174960999"}, {"start": T0 + timedelta(microseconds=1)},
              {"duration": 61}, {"carrier": "btw"}]
    result = store(database, *(base | {"file_id": second, "row": 2 + i} | o for i, o in enumerate(others)))
    assert (result.inserted, result.overlapping) == (5, 0)


def test_a_usage_repeated_within_one_batch_overlaps_its_first_row_in_the_same_file(database):
    file_id = add_file(database)
    result = store(database, call(file_id, 2, **usage(1)), call(file_id, 3, **usage(2)), call(file_id, 4, **usage(1)))
    assert (result.inserted, result.overlapping) == (3, 1)
    assert stored(database, file_id) == [(2, None, False), (3, None, False), (4, file_id, True)]


def test_the_same_usage_of_two_files_in_one_batch_is_claimed_by_the_first_in_batch_order(database):
    a, b = add_file(database, "a.csv"), add_file(database, "b.csv")
    result = store(database, call(b, 7, **usage(1)), call(a, 2, **usage(1)), call(a, 3, **usage(2)))
    assert list(result.files) == [b, a]  # in order of first appearance
    assert (result.files[b].overlapping, result.files[a].overlapping) == (0, 1)
    assert stored(database, a) == [(2, b, True), (3, None, False)]
    assert claims(database) == sorted([(b, 7), (a, 3)])


def test_a_file_that_bills_overlaps_stores_them_marked_but_not_set_aside(database):
    daily, monthly = add_file(database, "d.csv"), add_file(database, "m.csv", policy="bill")
    store(database, call(daily, 2, **usage(1)))
    result = store(database, call(monthly, 2, **usage(1)), policies={monthly: "bill"})
    assert result.overlapping == 1
    assert stored(database, monthly) == [(2, daily, False)]


def test_the_policy_is_asked_once_per_file_of_the_batch(database):
    a, b = add_file(database), add_file(database)
    asked = []
    with database.transaction() as session:
        store_calls(session, frame(call(a, 2, **usage(1)), call(b, 2, **usage(2)), call(a, 3, **usage(3))),
                    overlap_policy_of=lambda f: asked.append(f) or "skip")
    assert asked == [a, b]


def test_counts_are_kept_per_file_of_the_batch(database):
    a, b = add_file(database, "a.csv"), add_file(database, "b.csv")
    store(database, call(a, 2, **usage(1)))
    result = store(database, call(a, 2, **usage(1)), call(a, 3, **usage(2)), call(b, 2, **usage(2)),
                   call(b, 3, **usage(3)))
    assert {f: (s.calls, s.inserted, s.repeated, s.overlapping) for f, s in result.files.items()} == {
        a: (2, 1, 1, 0), b: (2, 2, 0, 1)}
    assert (result.calls, result.inserted, result.repeated, result.overlapping) == (4, 3, 1, 1)


def test_two_batches_in_one_transaction_are_both_stored(database):
    file_id = add_file(database)
    with database.transaction() as session:
        one = store_calls(session, frame(call(file_id, 2, **usage(1))), overlap_policy_of=lambda f: "skip")
        two = store_calls(session, frame(call(file_id, 3, **usage(2)), call(file_id, 4, **usage(1))),
                          overlap_policy_of=lambda f: "skip")
    assert (one.inserted, two.inserted, two.overlapping) == (1, 2, 1)
    assert stored(database, file_id) == [(2, None, False), (3, None, False), (4, file_id, True)]


def test_a_failed_batch_leaves_neither_claims_nor_calls(database):
    file_id = add_file(database)
    with pytest.raises(RuntimeError), database.transaction() as session:
        store_calls(session, frame(call(file_id, 2, **usage(1))), overlap_policy_of=lambda f: "skip")
        raise RuntimeError("crash before commit")
    assert (stored(database, file_id), claims(database)) == ([], [])
    assert store(database, call(file_id, 2, **usage(1))).inserted == 1


def test_money_in_micros_reads_back_as_the_exact_decimal(database):
    file_id = add_file(database)
    amounts = [Decimal("0.000001"), Decimal("-12.5"), Decimal("1234567890.123456"), Decimal("0.1")]
    store(database, *(call(file_id, 2 + i, **usage(i), cdr_cost=to_micros(a), charge=to_micros(a), cost=None)
                      for i, a in enumerate(amounts)))
    with database.transaction() as session:
        got = session.execute(select(Call.cdr_cost, Call.charge, Call.cost).where(Call.file_id == file_id)
                              .order_by(Call.row)).all()
    assert got == [(a, a, None) for a in amounts]


def test_text_and_nulls_are_stored_exactly_as_given(database):
    file_id = add_file(database)
    reasons = [None, "", 'no rate, "UKL"\nline two', "\\.", "\\N", "é ünïcode", " padded "]
    store(database, *(call(file_id, 2 + i, **usage(i), reason=r, charge_code="" if r is None else None)
                      for i, r in enumerate(reasons)))
    with database.transaction() as session:
        got = session.execute(select(Call.reason, Call.charge_code).where(Call.file_id == file_id)
                              .order_by(Call.row)).all()
    assert got == [(r, "" if r is None else None) for r in reasons]


def test_a_call_stored_reads_back_as_the_orm_would_have_written_it(database):
    """Same bytes in every column as the invoicer's former path (``insert_new`` of dicts through
    the Money and UtcDateTime types): start compares as the ORM writes it, money is micros."""
    ledger, orm = add_file(database, "ledger.csv"), add_file(database, "orm.csv")
    start = datetime(2026, 10, 1, 23, 59, 59, tzinfo=timezone(timedelta(hours=-5)))  # an offset; whole second
    c = call(ledger, 2, start=start, answered=False, charge=None, billable_seconds=None, reason="unanswered",
             status="unrated")
    store(database, c)
    with database.transaction() as session:
        money = {k: None if c[k] is None else Decimal(c[k]) / 1_000_000 for k in ("cdr_cost", "charge", "cost")}
        insert_new(session, Call.__table__, [c | money | {"file_id": orm, "overlaps_file_id": None,
                                                           "set_aside": False}], key=("file_id", "row"))
    with database.transaction() as session:
        columns = ", ".join(f'"{name}"' for name in (*CALL_COLUMNS, "overlaps_file_id", "set_aside", "invoice_id")
                            if name != "file_id")
        ledger_row, orm_row = (session.execute(text(f"SELECT {columns} FROM calls WHERE file_id = :f"), {"f": f}).one()
                               for f in (ledger, orm))
        assert ledger_row == orm_row
        assert session.scalar(select(Call.start).where(Call.file_id == ledger)) == start


def test_the_claimed_key_is_usage_key_so_calls_stored_before_the_ledger_are_still_found(database):
    """The claims of calls stored earlier (by the invoicer's former path, or the migration) were
    made by ``usage_key``: the ledger's keys must be the very same."""
    file_id = add_file(database)
    start = datetime(2026, 10, 1, 23, 59, 59, 999_999, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    store(database, call(file_id, 2, cli="441632960001", dialled="00441174960123", start=start, duration=3_601))
    with database.transaction() as session:
        claim = session.execute(select(CallUsageClaim.usage_start, CallUsageClaim.usage_hash)).one()
    assert tuple(claim) == usage_key("gamma", "441632960001", "00441174960123", start, 3_601)


def test_a_start_in_any_zone_is_the_same_instant_and_the_same_usage(database):
    first, second = add_file(database), add_file(database)
    store(database, call(first, 2, start=T0))
    paris = frame(call(second, 2)).with_columns(pl.col("start").dt.convert_time_zone("Europe/Paris"))
    with database.transaction() as session:
        result = store_calls(session, paris, overlap_policy_of=lambda f: "skip")
    assert result.overlapping == 1
    with database.transaction() as session:
        assert session.scalar(select(Call.start).where(Call.file_id == second)) == T0


def test_an_empty_batch_stores_nothing(database):
    with database.transaction() as session:
        result = store_calls(session, frame(), overlap_policy_of=lambda f: "skip")
    assert (result.files, result.inserted) == ({}, 0)


@pytest.mark.parametrize(("change", "error"), [
    (lambda df: df.with_columns(pl.col("charge").cast(pl.Float64)), "integer micros"),
    (lambda df: df.with_columns(pl.col("start").dt.replace_time_zone(None)), "aware Datetime"),
    (lambda df: df.drop("reason"), "missing \\['reason'\\]"),
    (lambda df: df.with_columns(colour=pl.lit("red")), "unknown \\['colour'\\]"),
    (lambda df: df.with_columns(cli=pl.lit(None, pl.String)), "without cli"),
    (lambda df: df.with_columns(row=pl.lit("second")), "does not fit the calls table"),
])
def test_a_batch_not_in_the_ledgers_shape_is_refused_before_anything_is_stored(database, change, error):
    file_id = add_file(database)
    with pytest.raises((ValueError, TypeError), match=error), database.transaction() as session:
        store_calls(session, change(frame(call(file_id, 2))), overlap_policy_of=lambda f: "skip")
    assert stored(database, file_id) == []


def test_a_driver_error_is_raised_as_sqlalchemy_would_raise_it(database):
    """Driver errors are translated at the boundary: the service loop tells a wrong batch from an
    unavailable database by SQLAlchemy's exception types, as for its other statements. (Here the
    transaction may not write; PostgreSQL's COPY and SQLite's executemany both refuse.)"""
    file_id = add_file(database)

    class Abandoned(Exception):
        pass

    with pytest.raises(Abandoned), database.transaction() as session:
        read_only = "PRAGMA query_only = ON" if session.bind.dialect.name == "sqlite" else "SET TRANSACTION READ ONLY"
        session.execute(text(read_only))
        with pytest.raises(DBAPIError, match="read"):
            store_calls(session, frame(call(file_id, 2)), overlap_policy_of=lambda f: "skip")
        raise Abandoned  # the transaction rolls back (and SQLite's connection may write again)
    assert claims(database) == []


def test_an_unknown_overlap_policy_is_refused(database):
    file_id = add_file(database)
    with pytest.raises(ValueError, match="not among skip, bill"), database.transaction() as session:
        store_calls(session, frame(call(file_id, 2)), overlap_policy_of=lambda f: "maybe")


texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(texts, texts, texts,
                          st.datetimes(min_value=datetime(1960, 1, 1), max_value=datetime(2100, 1, 1),
                                       timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)),
                                                                  timezone(timedelta(hours=-8))])),
                          st.integers(0, 10**7)), max_size=20))
def test_usage_keys_of_a_frame_are_usage_key_of_each_call(usages):
    df = pl.DataFrame(usages, schema={"carrier": pl.String, "cli": pl.String, "dialled": pl.String,
                                      "start": pl.Datetime("us", "UTC"), "duration": pl.Int64}, orient="row")
    assert usage_keys(df).rows() == [usage_key(*u) for u in usages]
