"""A large file cut into parts that any parser instance takes (services/parser/parts.py and the
parser's file-part handler): the parts read exactly what the whole file reads, in any order,
once, and the file's verdict is the whole file's."""

from __future__ import annotations

import gzip
import io
import random
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from cdrflow.db.models import Call, File, FilePartParsed, RejectedRow
from cdrflow.events import EventType
from cdrflow.intake import FileMetadata, file_arrived
from cdrflow.runtime import Runtime
from cdrflow.settings import Settings
from services.dedupe.service import Dedupe
from services.invoicer.service import Invoicer
from services.parser.api import ParseTotals, parse_part, parse_stream
from services.parser.parts import plan_parts
from services.parser.service import Parser
from services.rater.service import Rater
from tests.unit.test_handlers import handle, runtime as _runtime  # noqa: F401 (fixture reused below)

LONDON = ZoneInfo("Europe/London")
HEADER = b"cli,dialled,start,duration\n"


def cdr_file(rows: int, *, bad_every: int = 0, crlf: bool = False, seed: int = 1) -> bytes:
    """A generic-cdr file of ``rows`` calls of the sample customer's CLI; every ``bad_every``-th row
    has a duration that can't be read."""
    rng = random.Random(seed)
    start = datetime(2026, 10, 1, 8, 0)
    lines = [HEADER.rstrip(b"\n")]
    for n in range(1, rows + 1):
        duration = "soon" if bad_every and n % bad_every == 0 else str(rng.randint(1, 3600))
        at = (start + timedelta(seconds=37 * n)).isoformat()
        lines.append(f"01632960001,0207946{rng.randint(0, 9999):04d},{at},{duration}".encode())
    end = b"\r\n" if crlf else b"\n"
    return end.join(lines) + end


def whole(data: bytes) -> tuple[pl.DataFrame, list]:
    frames, rejects = [], []
    for batch in parse_stream(io.BytesIO(data), "generic-cdr", name="f.csv", zone=LONDON, batch_rows=1000):
        frames.append(batch.records)
        rejects += batch.rejects
    return pl.concat(frames), rejects


def in_parts(data: bytes, part_bytes: int) -> tuple[pl.DataFrame, list, int]:
    fh = io.BytesIO(data)
    parts = plan_parts(fh, len(data), part_bytes)
    assert parts is not None
    frames, rejects = [], []
    for part in reversed(parts):  # any order: rows carry their own numbers
        for batch in parse_part(fh, "generic-cdr", part, name="f.csv", zone=LONDON, batch_rows=1000):
            frames.append(batch.records)
            rejects += batch.rejects
    return pl.concat(frames).sort("row"), sorted(rejects, key=lambda r: r.row), len(parts)


def test_parts_cover_the_file_exactly_each_cut_after_a_line_end_with_its_first_line_number():
    data = cdr_file(500)
    parts = plan_parts(io.BytesIO(data), len(data), 2000)
    assert parts is not None and len(parts) > 5
    assert parts[0].start == 0 and parts[-1].end == len(data)
    for before, after in zip(parts, parts[1:]):
        assert before.end == after.start and data[after.start - 1:after.start] == b"\n"
        assert after.first_line == data[:after.start].count(b"\n") + 1 == before.first_line + before.lines
    assert sum(p.lines for p in parts) == data.count(b"\n")


def test_small_compressed_and_lone_cr_files_are_parsed_whole():
    data = cdr_file(500)
    assert plan_parts(io.BytesIO(data), len(data), len(data)) is None
    packed = gzip.compress(data)
    assert plan_parts(io.BytesIO(packed), len(packed), 100) is None
    old_mac = data.replace(b"\n", b"\r")
    assert plan_parts(io.BytesIO(old_mac), len(old_mac), 2000) is None


@settings(max_examples=25, deadline=None)
@given(part_bytes=st.integers(200, 5000), bad_every=st.sampled_from([0, 7, 50]), crlf=st.booleans(),
       last_newline=st.booleans())
def test_the_parts_read_exactly_what_the_whole_file_reads(part_bytes, bad_every, crlf, last_newline):
    data = cdr_file(300, bad_every=bad_every, crlf=crlf)
    if not last_newline:
        data = data.rstrip(b"\r\n")
    records, rejects = whole(data)
    got, got_rejects, _ = in_parts(data, part_bytes)
    assert got.equals(records)
    assert [(r.row, r.reason, r.raw) for r in got_rejects] == [(r.row, r.reason, r.raw) for r in rejects]


# --- the parser service ----------------------------------------------------------------------


@pytest.fixture
def parted(tmp_path):
    """A runtime whose parser cuts files larger than 4 KB."""
    from cdrflow.db import migrate
    from cdrflow_app.demo import load_sample_reference

    s = Settings(data_dir=tmp_path, batch_size=50, parse_part_bytes=4096)
    migrate(s.effective_database_url)
    rt = Runtime(s, "test")
    with rt.database.transaction() as session:
        load_sample_reference(session, rt.store)
    yield rt
    rt.database.dispose()


def accept(runtime, data: bytes, name: str = "btw-big.csv"):
    stored = runtime.store.put_bytes(data)
    meta = FileMetadata("btw", "cdr", "daily", "outbound", name, "upload")
    [accepted] = handle(runtime, Dedupe(runtime).on_file_arrived, file_arrived(stored, meta, "cdrflow/admin"))
    assert accepted.type == EventType.FILE_ACCEPTED
    return accepted


def ids_and_data(events):
    return [(e.id, e.data) for e in events]


def counts(runtime, file_id):
    with runtime.database.transaction() as session:
        file = session.get(File, file_id)
        return (file.status, session.scalar(select(func.count()).select_from(Call).where(Call.file_id == file_id)),
                session.scalar(select(func.count()).select_from(RejectedRow).where(RejectedRow.file_id == file_id)))


def test_a_large_file_is_parsed_in_parts_in_any_order_once_and_rated_as_a_whole(parted):
    data = cdr_file(600, bad_every=40)
    accepted = accept(parted, data)
    parser, rater, invoicer = Parser(parted), Rater(parted), Invoicer(parted)
    parts = handle(parted, parser.on_file_accepted, accepted)
    assert len(parts) >= 5 and {p.type for p in parts} == {EventType.FILE_PART}
    again = handle(parted, parser.on_file_accepted, accepted)
    assert ids_and_data(again) == ids_and_data(parts)  # planned again: the same parts

    shuffled = random.Random(7).sample(parts, len(parts))
    summaries = []
    for n, part in enumerate(shuffled):
        out = handle(parted, parser.on_file_part, part)
        if n == 1:
            repeat = handle(parted, parser.on_file_part, part)
            assert ids_and_data(repeat) == ids_and_data(out)  # a repeat: the same events, nothing added
        summaries += [e for e in out if e.data["part"] == "summary"]
        for parsed in out:
            for rated in handle(parted, rater.on_record_parsed, parsed):
                handle(parted, invoicer.on_call_rated, rated)
    [summary] = summaries  # sent by the part that completed the file, once
    assert (summary.data["rows"], summary.data["records"], summary.data["rejected"]) == (600, 585, 15)
    assert counts(parted, accepted.subject) == ("rated", 585, 15)

    # The same file parsed whole (another data dir) gives the same calls, row for row.
    records, rejects = whole(data)
    with parted.database.transaction() as session:
        stored = sorted(session.execute(select(Call.row, Call.start, Call.duration)
                                        .where(Call.file_id == accepted.subject)).all())
        assert session.scalar(select(func.count()).select_from(FilePartParsed)) == len(parts)
    assert stored == sorted(records.select("row", "start", "duration").rows())
    assert [r.row for r in rejects] == list(range(41, 602, 40))  # line 1 is the header


def test_the_reject_share_is_judged_over_the_whole_file_not_part_by_part(parted):
    # the first 150 rows all bad: the first part alone is over half rejected, the file is not
    data = cdr_file(600).splitlines(keepends=True)
    data = b"".join([data[0]] + [line.replace(b",", b";", 1) if n <= 150 else line
                                 for n, line in enumerate(data[1:], start=1)])
    accepted = accept(parted, data)
    parser = Parser(parted)
    for part in handle(parted, parser.on_file_accepted, accepted):
        handle(parted, parser.on_file_part, part)
    assert counts(parted, accepted.subject) == ("parsed", 0, 150)


def test_a_file_over_its_reject_share_fails_once_all_parts_are_in_and_sends_no_summary(parted):
    data = cdr_file(600, bad_every=2)  # half bad, then one more: over 50 %
    data = data.replace(b"01632960001,", b"01632960001;", 1)
    accepted = accept(parted, data)
    parser = Parser(parted)
    out = [e for part in handle(parted, parser.on_file_accepted, accepted)
           for e in handle(parted, parser.on_file_part, part)]
    assert not [e for e in out if e.data["part"] == "summary"]
    status, _, rejected = counts(parted, accepted.subject)
    assert status == "failed" and rejected == 301
    with parted.database.transaction() as session:
        assert "301 of 600 rows rejected" in session.get(File, accepted.subject).status_reason
