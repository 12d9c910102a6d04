"""Property tests: whatever bytes arrive, every built-in format either reads the file into
records and row rejections, or refuses it whole with a clear ``BadFileError``. Nothing else
escapes (no polars, csv, codec or zip exception), and every data row is accounted for once.
"""

import bz2
import gzip
import io
import zipfile
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdrflow.errors import BadFileError
from services.parser.api import known_formats, parse_stream
from tests.unit.test_formats_golden import CASES, FIXTURES

SAMPLES = {fmt: (FIXTURES / name).read_bytes() for name, fmt in CASES}
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NASTY = ["", ",", '"', '""', "\\", "\\,", "\r", "\n", "\r\n", "\x00", "\ufeff", "\xe9", "\xa3", "-1", "1e9",
         "99999999999999999999", "2026-02-30 25:61:61", "31/02/2026", "20261301000000.000", "NaN", "  ", "\t",
         "£", "𝄞", "Normal", "ANSWERED", "Yes"]


def outcome(data: bytes, fmt: str, batch_rows: int = 7):
    """(rows handed out, records, rejects) or the BadFileError; anything else fails the test."""
    try:
        batches = list(parse_stream(io.BytesIO(data), fmt, name="fuzz.csv", zone=ZoneInfo("Europe/London"),
                                    batch_rows=batch_rows, options={"max_reject_share": 1.0}))
    except BadFileError as exc:
        assert str(exc).startswith("fuzz.csv"), f"a file-level error must name the file: {exc}"
        return exc
    rows = [r for b in batches for r in b.records["row"].to_list()] + [r.row for b in batches for r in b.rejects]
    assert len(rows) == len(set(rows)), "a row became two records (or a record and a rejection)"
    assert all(r.reason for b in batches for r in b.rejects), "every rejection says why"
    return batches


@st.composite
def mutated(draw, fmt: str) -> bytes:
    """The format's own sample file with lines dropped, duplicated, cut, spliced and salted."""
    lines = SAMPLES[fmt].decode("cp1252").splitlines()
    out = []
    for line in draw(st.lists(st.sampled_from(lines), min_size=1, max_size=12)):
        action = draw(st.integers(0, 5))
        if action == 1 and line:
            cut = draw(st.integers(0, len(line)))
            line = line[:cut]
        elif action == 2:
            at = draw(st.integers(0, len(line)))
            line = line[:at] + draw(st.sampled_from(NASTY)) + line[at:]
        elif action == 3:
            fields = line.split(",")
            i = draw(st.integers(0, len(fields) - 1))
            fields[i] = draw(st.one_of(st.sampled_from(NASTY), st.text(max_size=12)))
            line = ",".join(fields)
        out.append(line)
    ending = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "cp1252"]))
    return ending.join(out).encode(encoding, errors="replace")


@pytest.mark.parametrize("fmt", known_formats())
@FUZZ
@given(data=st.data())
def test_a_mangled_sample_file_gives_records_and_rejections_or_a_clear_file_error(fmt, data):
    outcome(data.draw(mutated(fmt)), fmt)


@pytest.mark.parametrize("fmt", known_formats())
@FUZZ
@given(blob=st.binary(max_size=400))
def test_arbitrary_bytes_never_raise_anything_but_a_file_error(fmt, blob):
    outcome(blob, fmt)


@pytest.mark.parametrize("fmt", known_formats())
@FUZZ
@given(text=st.text(alphabet=st.sampled_from(list(',"\\\r\n 0123456789:/-.+aZ\xe9\u20ac')), max_size=300))
def test_text_made_of_csv_punctuation_never_raises_anything_but_a_file_error(fmt, text):
    outcome(text.encode("utf-8"), fmt)


@pytest.mark.parametrize("wrap", ["gzip", "bz2", "zip"])
@FUZZ
@given(cut=st.floats(0.0, 0.95))
def test_a_truncated_archive_is_a_file_error_not_a_crash(wrap, cut):
    sample = SAMPLES["gamma"] * 3
    if wrap == "gzip":
        packed = gzip.compress(sample)
    elif wrap == "bz2":
        packed = bz2.compress(sample)
    else:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("gamma.csv", sample)
        packed = buffer.getvalue()
    outcome(packed[: max(4, int(len(packed) * cut))], "gamma")


def test_every_line_of_a_sample_is_a_record_a_rejection_or_skipped_and_batches_never_overlap():
    for fmt, sample in SAMPLES.items():
        batches = outcome(sample, fmt, batch_rows=2)
        assert not isinstance(batches, BadFileError), batches
        header = 0 if fmt in ("asterisk", "freeswitch") else (2 if fmt == "cucm" else 1)
        data_lines = [line for line in sample.splitlines()[header:] if line.strip()]
        assert sum(b.rows for b in batches) == len(data_lines), fmt
