"""The calls ledger: rated calls stored once per (file, row), each claiming its usage key.

``store_calls`` takes a batch of calls as a polars DataFrame (the ``calls`` table's columns, money
in integer micros, possibly several files) and stores it in the caller's transaction:

1. The batch is checked and cast to the ``calls`` types, its usage keys computed (the keys of
   ``overlap.usage_key``, hashed from text polars builds), each file's overlap policy asked once.
2. Claims: the first call of each usage in the batch (batch order) claims its key. A key already
   held (by an earlier file, an earlier batch, or an invoicer storing another file at the same
   moment whose transaction commits first) stays with its holder: the primary key of
   ``call_usage_claims`` decides, not this process, so two invoicers agree.
3. Marks: a call whose key another (file, row) holds *overlaps* the holder's file
   (``overlaps_file_id``) and is set aside unless its file's policy is ``bill``.
4. Calls: inserted once per (file, row); a batch stored again after a crash adds nothing and
   keeps the marks of its first storing.
No Python runs per call but the key's hash and the driver's own reading of the values; Python
work per overlapping call only.

PostgreSQL, fast path, in a savepoint: one ``COPY`` of the batch's claims (in key order, so two
invoicers claiming the same keys wait for each other rather than deadlock), one ``COPY`` of its
calls, each from a CSV buffer polars writes. Any key held already (or claimed by a concurrent
transaction that commits: ``COPY`` waits for it, then fails) rolls the savepoint back, and the
batch goes the general way: the claims by ``INSERT … ON CONFLICT DO NOTHING`` from arrays (one
parameter each), then, for the calls it claimed nothing for, their keys' holders read by a
statement of its own (READ COMMITTED: it sees a claim committed while the insert waited; under
REPEATABLE READ that wait ends in a serialization error and the batch is retried); the calls by
``COPY`` again, or, when some are stored already, through a temporary table and
``INSERT … ON CONFLICT (file_id, row) DO NOTHING``.

SQLite (one writer at a time): the claims by one ``executemany`` ``ON CONFLICT DO NOTHING``; if
any call did not claim its own key, the holders are found by one join from a temporary table of
the batch's keys; the calls by one ``executemany`` of plain tuples ``ON CONFLICT (file_id, row)
DO NOTHING``, no SQLAlchemy processing per value.

Driver errors are raised as SQLAlchemy's (``DBAPIError`` and its kinds), as for every other
statement, so ``Database.transaction`` still tells an unavailable database from a wrong batch.
Nothing here commits: a claim and its call commit together or not at all.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl
import psycopg
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from services.invoicer.overlap import POLICIES, SKIP, usage_hashes, usage_text

CALL_COLUMNS: Mapping[str, pl.DataType] = {
    "file_id": pl.String(), "row": pl.Int64(), "carrier": pl.String(), "direction": pl.String(),
    "cli": pl.String(), "dialled": pl.String(), "start": pl.Datetime("us", "UTC"), "duration": pl.Int64(),
    "answered": pl.Boolean(), "charge_code": pl.String(), "account_code": pl.String(), "cdr_cost": pl.Int64(),
    "customer": pl.String(), "tariff": pl.String(), "code": pl.String(), "destination": pl.String(),
    "band": pl.String(), "billable_seconds": pl.Int64(), "charge": pl.Int64(), "cost": pl.Int64(),
    "status": pl.String(), "reason": pl.String(),
}
"""The columns of ``calls`` a batch fills, with the types they are stored as. Money (``cdr_cost``,
``charge``, ``cost``) is integer micros, as the Money column type stores it; ``start`` an instant."""

MONEY_COLUMNS = ("cdr_cost", "charge", "cost")
REQUIRED_COLUMNS = ("file_id", "row", "carrier", "direction", "cli", "dialled", "start", "duration", "answered",
                    "status")
"""Columns that may hold no null (NOT NULL in ``calls``, or part of the usage key)."""

_SQLITE_TIME = "%Y-%m-%d %H:%M:%S%.6f"
"""How SQLAlchemy's SQLite dialect writes a DATETIME (always six decimals): stored calls must compare
and sort as text exactly as the ORM writes them (``Call.start < end``)."""


@dataclass(frozen=True)
class FileStored:
    """What one batch did to one file's calls. ``overlapping`` counts the batch's calls whose usage
    another (file, row) holds, stored now or by an earlier delivery of the batch."""

    file_id: str
    calls: int
    inserted: int
    overlapping: int

    @property
    def repeated(self) -> int:
        """Calls already stored under their (file, row): a batch delivered again."""
        return self.calls - self.inserted


@dataclass(frozen=True)
class StoreResult:
    """Per file, in order of first appearance in the batch, and totals."""

    files: Mapping[str, FileStored]

    @property
    def calls(self) -> int:
        return sum(f.calls for f in self.files.values())

    @property
    def inserted(self) -> int:
        return sum(f.inserted for f in self.files.values())

    @property
    def repeated(self) -> int:
        return sum(f.repeated for f in self.files.values())

    @property
    def overlapping(self) -> int:
        return sum(f.overlapping for f in self.files.values())


def store_calls(session: Session, calls: pl.DataFrame, *, overlap_policy_of: Callable[[str], str]) -> StoreResult:
    """Store ``calls`` (exactly the columns of ``CALL_COLUMNS``; several files allowed) once per
    (file, row), claiming their usage keys and marking overlaps; ``overlap_policy_of(file_id)`` is
    the file's overlap policy (``skip`` or ``bill``), asked once per file. Runs in the session's
    transaction; nothing is committed here. Refuses a frame of another shape or types
    (ValueError; TypeError for money that is not integer micros) before touching the database."""
    dialect = session.get_bind().dialect.name
    if dialect not in ("postgresql", "sqlite"):
        raise NotImplementedError(f"the calls ledger has no path for {dialect}")
    frame, files = _staged(calls, start_as_text=dialect == "sqlite")
    if not files:
        return StoreResult({})
    policies = {f: overlap_policy_of(f) for f in files}
    if bad := {f: p for f, p in policies.items() if p not in POLICIES}:
        raise ValueError(f"overlap policies {bad} are not among {', '.join(POLICIES)}")

    connection = session.connection()
    raw = connection.connection.driver_connection
    try:
        held, inserted = (_store_postgresql if dialect == "postgresql" else _store_sqlite)(raw, frame, files, policies)
    except connection.dialect.loaded_dbapi.Error as exc:
        raise _translated(connection, raw, exc) from exc
    in_batch = {files[0]: len(frame)} if len(files) == 1 else Counter(frame["file_id"].to_list())
    overlapping = Counter(file_id for _, file_id, _ in held)
    return StoreResult({f: FileStored(f, in_batch[f], inserted[f], overlapping[f]) for f in files})


def _translated(connection: Connection, raw: Any, exc: Exception) -> Exception:
    """A driver error as SQLAlchemy would have raised it, so ``Database.transaction`` tells a
    database that is unavailable (retried) from a statement that is wrong, as for any other query."""
    broken = bool(getattr(raw, "broken", False))  # psycopg: the connection is lost
    if broken:
        connection.invalidate(exc)
    return DBAPIError.instance(None, None, exc, connection.dialect.loaded_dbapi.Error,
                               connection_invalidated=broken, dialect=connection.dialect)


def _staged(calls: pl.DataFrame, *, start_as_text: bool) -> tuple[pl.DataFrame, list[str]]:
    """The batch in ``calls`` types, then ``usage_start``, ``ord`` (place in the batch), ``first``
    (the batch's first call of its usage) and ``usage_hash``; and its files in order of first
    appearance. One polars query: a batch of a thousand calls pays more per query than per call."""
    if set(calls.columns) != set(CALL_COLUMNS):
        missing, extra = set(CALL_COLUMNS) - set(calls.columns), set(calls.columns) - set(CALL_COLUMNS)
        raise ValueError(f"calls frame columns differ from the calls table's: missing {sorted(missing)}, "
                         f"unknown {sorted(extra)}")
    for name in MONEY_COLUMNS:
        dtype = calls.schema[name]
        if not (dtype.is_integer() or dtype == pl.Null):
            raise TypeError(f"{name} is {dtype}: money travels as integer micros (never float), see cdrflow.money")
    start = calls.schema["start"]
    if not isinstance(start, pl.Datetime) or start.time_zone is None:
        raise ValueError(f"start is {start}: calls are stored as instants (an aware Datetime)")
    typed = calls.lazy().select(
        pl.col("start").dt.convert_time_zone("UTC").dt.cast_time_unit("us"),
        *(pl.col(c).cast(t, strict=True) for c, t in CALL_COLUMNS.items() if c != "start"))
    micros = pl.col("start").dt.epoch("us")
    try:
        frame = typed.select(
            *(pl.col("start").dt.strftime(_SQLITE_TIME) if c == "start" and start_as_text else pl.col(c)
              for c in CALL_COLUMNS),
            usage_start=micros // 1_000_000, ord=pl.int_range(pl.len(), dtype=pl.Int32), usage_text=usage_text(micros),
        ).with_columns(first=pl.col("usage_text").is_first_distinct()).collect()
    except pl.exceptions.PolarsError as exc:  # a value that is not of its column's type
        raise ValueError(f"calls frame does not fit the calls table: {exc}") from exc
    if nulls := [c for c in REQUIRED_COLUMNS if frame[c].null_count()]:
        raise ValueError(f"calls without {', '.join(nulls)}: each call needs them")
    frame.hstack([usage_hashes(frame.drop_in_place("usage_text").to_list())], in_place=True)
    return frame, frame["file_id"].unique(maintain_order=True).to_list()


Held = list[tuple[int, str, str]]
"""The batch's calls whose usage another (file, row) holds: (ord, the call's file, the holder's file)."""


def _marked(frame: pl.DataFrame, held: Held, policies: Mapping[str, str]) -> pl.DataFrame:
    """The calls as stored: their columns, ``overlaps_file_id`` and ``set_aside``. Python work for
    the overlapping calls only."""
    overlaps: list[str | None] = [None] * len(frame)
    aside = [False] * len(frame)
    for place, file_id, holder in held:
        overlaps[place], aside[place] = holder, policies[file_id] == SKIP
    return pl.DataFrame([*(frame[c] for c in CALL_COLUMNS), pl.Series("overlaps_file_id", overlaps, dtype=pl.String),
                         pl.Series("set_aside", aside, dtype=pl.Boolean)])


Inserted = Mapping[str, int]
"""Calls inserted, per file."""


_KEYS = ("usage_start", "usage_hash", "file_id", "row", "ord")
_MARKED = ", ".join(f'"{c}"' for c in (*CALL_COLUMNS, "overlaps_file_id", "set_aside"))

# --- PostgreSQL ------------------------------------------------------------------------------

_PG_CLAIM = """
WITH batch AS MATERIALIZED (
    SELECT k.usage_start, k.usage_hash, (%(files)s::text[])[k.file] AS file_id, k."row", k.ord - 1 AS ord
    FROM unnest(%(starts)s::bigint[], %(hashes)s::bigint[], %(file_of)s::integer[], %(rows)s::integer[])
         WITH ORDINALITY AS k (usage_start, usage_hash, file, "row", ord)
), claimed AS (
    INSERT INTO call_usage_claims (usage_start, usage_hash, file_id, "row")
    SELECT DISTINCT ON (usage_start, usage_hash) usage_start, usage_hash, file_id, "row"
    FROM batch ORDER BY usage_start, usage_hash, ord
    ON CONFLICT (usage_start, usage_hash) DO NOTHING
    RETURNING usage_start, usage_hash, file_id, "row"
)
SELECT b.ord FROM batch b WHERE NOT EXISTS (
    SELECT FROM claimed c WHERE (c.usage_start, c.usage_hash, c.file_id, c."row") = (b.usage_start, b.usage_hash, b.file_id, b."row"))
"""
"""Claims the batch's keys, in key order; returns the calls this statement claimed nothing for:
their key was held already, or is held by the batch's first call of the same usage."""
_PG_HOLDERS = """
SELECT k.ord, c.file_id, c."row"
FROM unnest(%(starts)s::bigint[], %(hashes)s::bigint[], %(ords)s::integer[]) AS k (usage_start, usage_hash, ord)
JOIN call_usage_claims c ON c.usage_start = k.usage_start AND c.usage_hash = k.usage_hash
"""
"""The holders of those keys, read by a statement of its own: it sees a claim another transaction
committed while the claim above waited for it (READ COMMITTED; under REPEATABLE READ that wait
ends in a serialization error instead, and the batch is retried)."""
_PG_REPEATS = (f"CREATE TEMP TABLE IF NOT EXISTS ledger_calls ON COMMIT DROP AS "
               f"SELECT {_MARKED} FROM calls WITH NO DATA; DELETE FROM ledger_calls")
"""For a batch some of whose calls are stored already: dropped at commit (a temporary table kept
with ON COMMIT DELETE ROWS that has text columns costs every later commit milliseconds)."""
_PG_INSERT_NEW = (f"INSERT INTO calls ({_MARKED}) SELECT {_MARKED} FROM ledger_calls "
                  'ON CONFLICT (file_id, "row") DO NOTHING RETURNING file_id')


def _array(column: pl.Expr) -> pl.Expr:
    """A PostgreSQL array literal of an integer column, written by polars: one parameter for the
    whole batch, parsed by the server, no Python object per call."""
    return pl.format("{{{}}}", column.cast(pl.String).str.join(","))


def _csv(frame: pl.DataFrame) -> memoryview:
    # Every string quoted: a null is the only unquoted empty field, and no value reads as COPY's "\." end mark.
    buffer = io.BytesIO()
    frame.write_csv(buffer, include_header=False, quote_style="non_numeric")
    return buffer.getbuffer()


def _store_postgresql(raw: Any, frame: pl.DataFrame, files: Sequence[str],
                      policies: Mapping[str, str]) -> tuple[Held, Inserted]:
    """The fast path (see the module's docstring), else the general one."""
    repeats = not frame["first"].all()  # a usage twice in the batch
    held = _held_within(frame) if repeats else []
    claims = frame.lazy().filter("first") if repeats else frame.lazy()
    claims = claims.select("usage_start", "usage_hash", "file_id", "row").sort("usage_start", "usage_hash").collect()
    marked = _marked(frame, held, policies)
    with raw.cursor() as cursor:
        cursor.execute("SAVEPOINT ledger_batch")
        try:
            with cursor.copy('COPY call_usage_claims (usage_start, usage_hash, file_id, "row") '
                             "FROM STDIN (FORMAT csv)") as copy:
                copy.write(_csv(claims))
            with cursor.copy(f"COPY calls ({_MARKED}) FROM STDIN (FORMAT csv)") as copy:
                copy.write(_csv(marked))
        except psycopg.errors.UniqueViolation:
            cursor.execute("ROLLBACK TO SAVEPOINT ledger_batch; RELEASE SAVEPOINT ledger_batch")
        else:
            copied = cursor.rowcount
            cursor.execute("RELEASE SAVEPOINT ledger_batch")
            return held, {files[0]: copied} if len(files) == 1 else Counter(frame["file_id"].to_list())
    held = _claim_postgresql(raw, frame, files)
    return held, _insert_postgresql(raw, _marked(frame, held, policies), files)


def _held_within(frame: pl.DataFrame) -> Held:
    """The batch's calls whose usage an earlier call of the batch has: held by that call."""
    repeats = frame.lazy().select(
        "ord", "file_id", "first", holder=pl.col("file_id").first().over("usage_start", "usage_hash"),
    ).filter(~pl.col("first")).collect()
    return list(zip(repeats["ord"].to_list(), repeats["file_id"].to_list(), repeats["holder"].to_list(), strict=True))


def _claim_postgresql(raw: Any, frame: pl.DataFrame, files: Sequence[str]) -> Held:
    """Claims by upsert, then the holders of the keys claimed for another call."""
    file_of = pl.col("file_id").replace_strict({f: n for n, f in enumerate(files, 1)}, return_dtype=pl.Int32)
    arrays = frame.select(starts=_array(pl.col("usage_start")), hashes=_array(pl.col("usage_hash")),
                          file_of=_array(file_of), rows=_array(pl.col("row"))).row(0, named=True)
    with raw.cursor() as cursor:
        unclaimed = pl.Series("ord", [o for (o,) in cursor.execute(_PG_CLAIM, {**arrays, "files": list(files)})],
                              dtype=pl.Int32)
        if unclaimed.is_empty():
            return []
        keys = frame.select(pl.col("usage_start", "usage_hash").gather(unclaimed), ord=unclaimed).select(
            starts=_array(pl.col("usage_start")), hashes=_array(pl.col("usage_hash")), ords=_array(pl.col("ord")))
        holders = cursor.execute(_PG_HOLDERS, keys.row(0, named=True)).fetchall()
    file_ids, rows = frame["file_id"].to_list(), frame["row"].to_list()
    return [(o, file_ids[o], f) for o, f, r in holders if (f, r) != (file_ids[o], rows[o])]


def _insert_postgresql(raw: Any, marked: pl.DataFrame, files: Sequence[str]) -> Inserted:
    """``COPY`` in a savepoint; if a (file, row) is stored already, only the new calls, by upsert."""
    data = _csv(marked)
    with raw.cursor() as cursor:
        cursor.execute("SAVEPOINT ledger_calls")
        try:
            with cursor.copy(f"COPY calls ({_MARKED}) FROM STDIN (FORMAT csv)") as copy:
                copy.write(data)
        except psycopg.errors.UniqueViolation:
            cursor.execute("ROLLBACK TO SAVEPOINT ledger_calls; RELEASE SAVEPOINT ledger_calls")
        else:
            copied = cursor.rowcount
            cursor.execute("RELEASE SAVEPOINT ledger_calls")
            return {files[0]: copied} if len(files) == 1 else Counter(marked["file_id"].to_list())
        # a (file, row) of the batch is stored already (a repeat): only the new calls go in
        cursor.execute(_PG_REPEATS)
        with cursor.copy(f"COPY ledger_calls ({_MARKED}) FROM STDIN (FORMAT csv)") as copy:
            copy.write(data)
        return Counter(file_id for (file_id,) in cursor.execute(_PG_INSERT_NEW))


# --- SQLite ----------------------------------------------------------------------------------

_SQLITE_CLAIM = ('INSERT INTO call_usage_claims (usage_start, usage_hash, file_id, "row") VALUES (?, ?, ?, ?) '
                 "ON CONFLICT (usage_start, usage_hash) DO NOTHING")
"""In batch order: the first call of a usage in the batch claims it, later ones conflict with it."""
_SQLITE_KEYS = 'CREATE TEMP TABLE IF NOT EXISTS ledger_keys (usage_start, usage_hash, file_id, "row", ord)'
_SQLITE_HELD_BY_OTHERS = """
SELECT k.ord, k.file_id, c.file_id FROM ledger_keys k
CROSS JOIN call_usage_claims c ON c.usage_start = k.usage_start AND c.usage_hash = k.usage_hash
WHERE c.file_id <> k.file_id OR c."row" <> k."row"
"""
"""CROSS JOIN keeps the batch's keys driving the join: one index probe into the claims each."""
_SQLITE_INSERT = (f"INSERT INTO calls ({_MARKED}) VALUES ({', '.join('?' for _ in range(len(CALL_COLUMNS) + 2))}) "
                  'ON CONFLICT (file_id, "row") DO NOTHING')


def _store_sqlite(raw: Any, frame: pl.DataFrame, files: Sequence[str],
                  policies: Mapping[str, str]) -> tuple[Held, Inserted]:
    held = _claim_sqlite(raw, frame)
    return held, _insert_sqlite(raw, _marked(frame, held, policies), files)


def _claim_sqlite(raw: Any, frame: pl.DataFrame) -> Held:
    """Claims straight into ``call_usage_claims``; when every call claimed its own key (the usual
    case: nothing overlaps) that is all. Otherwise the batch's keys go into a temporary table to
    find, in one join, the calls whose key another (file, row) holds."""
    keys = [frame[c].to_list() for c in _KEYS]
    if raw.executemany(_SQLITE_CLAIM, zip(*keys[:4])).rowcount == len(frame):
        return []
    raw.execute(_SQLITE_KEYS)
    raw.execute("DELETE FROM ledger_keys")  # left over if an earlier batch failed half-way
    raw.executemany("INSERT INTO ledger_keys VALUES (?, ?, ?, ?, ?)", zip(*keys))
    held = raw.execute(_SQLITE_HELD_BY_OTHERS).fetchall()
    raw.execute("DELETE FROM ledger_keys")  # the temporary table outlives the transaction: keep it small
    return held


def _insert_sqlite(raw: Any, marked: pl.DataFrame, files: Sequence[str]) -> Inserted:
    rows = zip(*(s.to_list() for s in marked.iter_columns()))
    if len(files) == 1:
        return {files[0]: raw.executemany(_SQLITE_INSERT, rows).rowcount}
    rows = list(rows)
    return {f: raw.executemany(_SQLITE_INSERT, (r for r in rows if r[0] == f)).rowcount for f in files}
