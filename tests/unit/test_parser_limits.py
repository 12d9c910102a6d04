"""Hostile and broken files cost the parser bounded work and end with a reason an operator can act
on: over-long fields and lines are rejected rows (short reasons, short raw lines), files past a
size, line or blank-line limit fail whole, and a file with nothing in it says so."""

import bz2
import gzip
import io
from zoneinfo import ZoneInfo

import pytest

from cdrflow.errors import BadFileError
from cdrflow.reasons import REASON_MAX_CHARS
from services.parser.api import ParseLimits, ParseTotals, RejectedRow, parse_stream
from services.parser.limits import RAW_MAX_CHARS
from tests.unit.test_formats_files import zipped
from tests.unit.test_formats_golden import FIXTURES

HEADER = b"cli,dialled,start,duration,charge_code,account_code\n"
GOOD = b"+441632960001,01174960123,2026-10-01T09:15:00,60,LON,ACC1\n"
SDR_HEADER = b"reference,amount,description,event_type\n"
SDR_GOOD = b"+441632960001,12.50,Line rental,Rental\n"


def row(cli=b"+441632960001", dialled=b"01174960123", duration=b"60", charge_code=b"LON", account_code=b"ACC1"):
    return b",".join([cli, dialled, b"2026-10-01T09:15:00", duration, charge_code, account_code]) + b"\n"


class Counting(io.RawIOBase):
    """A stream that counts what was read from it: proof that a failing file was not read to its end."""

    def __init__(self, data: bytes) -> None:
        self.inner, self.read_bytes = io.BytesIO(data), 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.inner.read(len(buffer))
        buffer[: len(data)] = data
        self.read_bytes += len(data)
        return len(data)


def parse(data: bytes | io.RawIOBase, fmt: str = "generic-cdr", limits: ParseLimits | None = None,
          batch_rows: int = 100_000):
    """(records, rejects, totals) of a file, every row judged (no reject share fails it)."""
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    options = {"max_reject_share": 1.0} | ({"limits": limits} if limits is not None else {})
    totals = ParseTotals()
    batches = [totals.add(b) for b in parse_stream(stream, fmt, name="cdrs.csv", zone=ZoneInfo("Europe/London"),
                                                   batch_rows=batch_rows, options=options)]
    records = [r for b in batches for r in b.records.iter_rows(named=True)]
    return records, [r for b in batches for r in b.rejects], totals


def newline_gzip(total: int, member: int = 16 * 1024**2) -> bytes:
    """A gzip of ``total`` newlines, made quickly: gzip members may be concatenated, so one is repeated."""
    one = gzip.compress(b"\n" * member, compresslevel=1)
    return one * (total // member)


# --- field length limits ------------------------------------------------------------------


def test_a_50_million_digit_dialled_number_is_a_rejected_row_with_its_line_and_the_other_rows_go_through():
    records, rejects, _ = parse(HEADER + GOOD + row(dialled=b"1" * 50_000_000) + GOOD)
    assert [r["row"] for r in records] == [2, 4]
    [reject] = rejects
    assert reject.row == 3
    assert reject.reason == ("line is 50,000,046 bytes long: at most 1 MiB (1,048,576 bytes) a line "
                             "(a quote left open, or not a line of call records?)")


def test_a_50_million_digit_dialled_number_in_a_line_within_the_limit_is_rejected_for_its_own_length():
    limits = ParseLimits(max_line_bytes=64 * 1024**2)
    records, [reject], _ = parse(HEADER + GOOD + row(dialled=b"1" * 50_000_000) + GOOD, limits=limits)
    assert [r["row"] for r in records] == [2, 4]
    assert reject.row == 3
    assert reject.reason == (f"dialled '{'1' * 100}…' is 50,000,000 characters long: at most 32 "
                             f"(an E.164 number has at most 15 digits)")


@pytest.mark.parametrize("field", ["cli", "dialled"])
def test_a_number_of_33_characters_is_rejected_and_one_of_32_is_read(field):
    too_long, longest = b"+" + b"4" * 32, b"+" + b"4" * 31
    records, [reject], _ = parse(HEADER + row(**{field: too_long}) + row(**{field: longest}))
    assert [r[field] for r in records] == [longest.decode()]
    assert (reject.row, reject.reason) == (2, f"{field} '{too_long.decode()}' is 33 characters long: at most 32 "
                                              f"(an E.164 number has at most 15 digits)")


def test_a_number_is_measured_in_characters_not_bytes():
    sip = "ñ".encode() * 32  # 64 bytes of UTF-8, 32 characters: fits the column (and is no number)
    _, [reject], _ = parse(HEADER + row(cli=sip))
    assert reject.reason.endswith("is not a telephone number")


@pytest.mark.parametrize(("field", "limit"), [("charge_code", 64), ("account_code", 64)])
def test_a_call_text_field_longer_than_its_column_is_rejected(field, limit):
    records, [reject], _ = parse(HEADER + row(**{field: b"X" * (limit + 1)}) + row(**{field: b"X" * limit}))
    assert len(records) == 1
    assert reject.reason == f"{field} '{'X' * (limit + 1)}' is {limit + 1} characters long: at most {limit}"


@pytest.mark.parametrize(("column", "limit"), [(0, 64), (2, 1000), (3, 32)], ids=["reference", "description", "event_type"])
def test_a_carrier_transaction_text_field_longer_than_its_maximum_is_rejected(column, limit):
    fields = SDR_GOOD.rstrip(b"\n").split(b",")
    fields[column] = b"R" * (limit + 1)
    records, [reject], _ = parse(SDR_HEADER + b",".join(fields) + b"\n" + SDR_GOOD, "generic-sdr")
    assert [r["row"] for r in records] == [3]
    assert reject.row == 2 and f"is {limit + 1:,} characters long: at most {limit}" in reject.reason


def test_a_50_mb_field_leaves_a_short_reason_and_a_short_raw_line():
    limits = ParseLimits(max_line_bytes=64 * 1024**2)  # let the line in: the field's own reason quotes it
    _, [reject], _ = parse(HEADER + row(duration=b"x" * 50_000_000), limits=limits)
    assert reject.reason == f"duration '{'x' * 100}…' is not a whole number of seconds"
    assert len(reject.raw) == RAW_MAX_CHARS
    assert reject.raw.startswith("+441632960001,01174960123,2026-10-01T09:15:00,xxx")
    assert reject.raw.endswith(f"… ({len(row(duration=b'x' * 50_000_000)) - 1 - RAW_MAX_CHARS:,} more characters)")


def test_a_50_mb_line_read_past_keeps_only_its_start_as_raw():
    _, [reject], _ = parse(HEADER + row(account_code=b"A" * 50_000_000))
    assert len(reject.raw) <= RAW_MAX_CHARS and len(reject.reason) <= REASON_MAX_CHARS
    assert reject.raw.startswith("+441632960001,01174960123,")
    assert reject.raw.endswith("… (cut: the line is 50,000,053 bytes long)")


def test_a_rejected_row_made_anywhere_is_cut_to_size():
    made = RejectedRow(7, "r" * 5_000, "w" * 5_000)
    assert len(made.reason) == REASON_MAX_CHARS and made.reason.endswith("… (4,000 more characters)")
    assert len(made.raw) == RAW_MAX_CHARS and made.raw.endswith("… (4,000 more characters)")


# --- line length ---------------------------------------------------------------------------


@pytest.mark.parametrize("length", [5_000, 300_000], ids=["held-in-a-block", "read-past"])
@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_a_line_over_the_line_length_limit_is_a_rejected_row_and_line_numbers_stay_right(length, ending):
    long = row(account_code=b"A" * length)
    text = HEADER + GOOD + long + GOOD
    records, [reject], totals = parse(text.replace(b"\n", ending), limits=ParseLimits(max_line_bytes=1000))
    assert [r["row"] for r in records] == [2, 4]
    assert reject.row == 3
    assert reject.reason.startswith(f"line is {len(long) - 1:,} bytes long: at most 1,000 bytes a line")
    assert (totals.rows, totals.records, totals.rejected) == (3, 2, 1)


def test_a_long_last_line_without_a_line_end_is_rejected():
    records, [reject], _ = parse(HEADER + GOOD + b"z" * 300_000, limits=ParseLimits(max_line_bytes=1000))
    assert len(records) == 1 and reject.row == 3 and reject.reason.startswith("line is 300,000 bytes long")


def test_a_long_line_in_a_format_read_by_the_csv_module_is_a_rejected_row_too():
    lines = (FIXTURES / "broadworks-BW-CDR-20261001.csv").read_bytes().split(b"\n")
    header, call, other = lines[0] + b"\n", lines[2] + b"\n", lines[3] + b"\n"
    huge = call.replace(b",ACC1,", b"," + b"z" * 200_000 + b",")  # past the csv module's own field limit
    records, [reject], _ = parse(header + call + huge + other, "broadworks")
    assert [r["row"] for r in records] == [2, 4]
    assert reject.row == 3 and reject.reason.startswith("account_code 'zzz")
    records, [reject], _ = parse(header + call + huge + other, "broadworks", limits=ParseLimits(max_line_bytes=1000))
    assert [r["row"] for r in records] == [2, 4]
    assert reject.row == 3 and reject.reason.startswith("line is 200,")


def test_a_header_line_over_the_limit_fails_the_file():
    with pytest.raises(BadFileError, match=r"^cdrs\.csv: line 1: longer than 1,000 bytes, the most a line may be"):
        parse(b"c" * 5_000 + HEADER + GOOD, limits=ParseLimits(max_line_bytes=1000))


# --- blank lines, lines per file -------------------------------------------------------------


def test_a_gzip_of_a_gigabyte_of_newlines_fails_on_the_blank_lines_without_being_read_to_its_end():
    bomb = Counting(newline_gzip(1024**3))
    with pytest.raises(BadFileError, match=r"^cdrs\.csv: line 1: more than 10,000 blank lines in a row: "
                                           r"not a file of call records \(a file of newlines\?\)$"):
        parse(bomb)
    assert bomb.read_bytes < len(bomb.inner.getvalue()) / 10


@pytest.mark.parametrize("fmt", ["generic-cdr", "asterisk"], ids=["before-a-header", "no-header"])
def test_newlines_past_a_small_blank_run_limit_fail_the_file_with_the_line_the_run_starts_at(fmt):
    with pytest.raises(BadFileError, match=r"^cdrs\.csv: line 1: more than 100 blank lines in a row"):
        parse(gzip.compress(b"\n" * 1_000_000), fmt, limits=ParseLimits(max_blank_run=100))


@pytest.mark.parametrize("blank", [b"\n", b"\r\n", b" \t\n"], ids=["lf", "crlf", "spaces"])
def test_blank_lines_before_the_header_are_skipped_in_bulk_and_counted_as_lines(blank):
    records, _, _ = parse(blank * 5_000 + HEADER + GOOD)
    assert [r["row"] for r in records] == [5_002]


def test_blank_lines_between_calls_up_to_the_limit_are_neither_rows_nor_a_failure():
    limits = ParseLimits(max_blank_run=100)
    records, rejects, totals = parse(HEADER + GOOD + b"\n" * 100 + GOOD + b"\r\n" * 100 + GOOD, limits=limits)
    assert [r["row"] for r in records] == [2, 103, 204] and not rejects and totals.rows == 3
    with pytest.raises(BadFileError, match=r"line 3: more than 100 blank lines in a row"):
        parse(HEADER + GOOD + b"\n" * 101 + GOOD, limits=limits)


def test_a_blank_run_is_counted_across_blocks():
    """Blocks are cut wherever the bytes fall: a run split over two blocks is still one run."""
    text = HEADER + GOOD * 2_000 + b"\n" * 150_000 + GOOD
    with pytest.raises(BadFileError, match=r"line 2,002: more than 100,000 blank lines in a row"):
        parse(text, limits=ParseLimits(max_blank_run=100_000), batch_rows=1_000)


def test_a_file_of_whitespace_lines_stops_at_the_line_limit():
    bomb = Counting(gzip.compress(HEADER + b"   \n" * 5_000_000, compresslevel=1))
    with pytest.raises(BadFileError, match=r"^cdrs\.csv: has more than 1,000,000 lines, the most a file may have: "
                                           r"split it into smaller files$"):
        parse(bomb, limits=ParseLimits(max_lines=1_000_000))
    assert bomb.read_bytes < len(bomb.inner.getvalue())


def test_a_file_with_more_lines_than_the_limit_fails():
    with pytest.raises(BadFileError, match="has more than 10 lines"):
        parse(HEADER + GOOD * 10, limits=ParseLimits(max_lines=10))
    assert len(parse(HEADER + GOOD * 9, limits=ParseLimits(max_lines=10))[0]) == 9


# --- decompressed size ---------------------------------------------------------------------


@pytest.mark.parametrize("pack", [gzip.compress, bz2.compress], ids=["gz", "bz2"])
def test_a_file_that_decompresses_past_the_limit_fails_as_a_likely_zip_bomb(pack):
    data = pack(HEADER + GOOD * 1_000)
    with pytest.raises(BadFileError, match=r"^cdrs\.csv: decompresses to more than 10 KiB \(10,240 bytes\): "
                                           r"refused as a likely zip bomb \(a real file this large must be split\)$"):
        parse(data, limits=ParseLimits(max_decompressed_bytes=10_240))
    assert len(parse(data, limits=ParseLimits(max_decompressed_bytes=1024**2))[0]) == 1_000


def test_a_zip_whose_members_say_they_unpack_past_the_limit_fails_before_reading():
    data = zipped(("a.csv", HEADER + GOOD * 100), ("b.csv", HEADER + GOOD * 100))
    with pytest.raises(BadFileError, match=r"^cdrs\.csv: zip archive says its files unpack to 11,\d{3} bytes, "
                                           r"more than 8,000 bytes allowed: refused as a likely zip bomb$"):
        parse(data, limits=ParseLimits(max_decompressed_bytes=8_000))


def lying(archive: bytes, size: int) -> bytes:
    """The zip with every member's uncompressed size written as ``size`` (local and central headers)."""
    data = bytearray(archive)
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.find(signature)
        while at >= 0:
            data[at + offset : at + offset + 4] = size.to_bytes(4, "little")
            at = data.find(signature, at + 4)
    return bytes(data)


def test_a_zip_that_lies_about_its_size_is_read_no_further_than_it_says_and_fails_as_damaged():
    data = lying(zipped(("a.csv", HEADER + GOOD * 10_000)), 100)
    with pytest.raises(BadFileError, match=r"^cdrs\.csv:a\.csv: compressed data is damaged or truncated"):
        parse(data, limits=ParseLimits(max_decompressed_bytes=8_000))


def test_the_size_limit_counts_every_member_of_a_zip_together():
    member = HEADER + GOOD * 100  # 5,9xx bytes each: two fit in 12,000, three do not
    assert len(parse(zipped(("a.csv", member), ("b.csv", member)), limits=ParseLimits(max_decompressed_bytes=12_000))[0]) == 200
    with pytest.raises(BadFileError, match="more than 12,000 bytes allowed"):
        parse(zipped(("a.csv", member), ("b.csv", member), ("c.csv", member)),
              limits=ParseLimits(max_decompressed_bytes=12_000))


# --- empty of records, options ---------------------------------------------------------------


@pytest.mark.parametrize("text", [HEADER, HEADER + b"\n\n\n", b"\n" * 50 + HEADER], ids=["header", "blank", "blank-first"])
def test_a_file_with_no_data_rows_yields_no_batch_and_says_no_call_records(text):
    records, rejects, totals = parse(text)
    assert (records, rejects, totals.rows) == ([], [], 0)
    assert totals.no_records_reason() == "no call records: the file has no data rows (nothing but a header or blank lines)"


def test_a_file_whose_every_row_is_rejected_says_no_call_records_and_how_many_were_rejected():
    *_, totals = parse(HEADER + row(dialled=b"") * 3)
    assert totals.no_records_reason() == "no call records: 3 row(s), 3 rejected"
    assert parse(HEADER + GOOD)[2].no_records_reason() is None
    assert parse(SDR_HEADER, "generic-sdr")[2].no_records_reason("sdr").startswith("no carrier transactions: ")


def test_limits_must_be_whole_numbers_and_the_option_a_parse_limits():
    with pytest.raises(ValueError, match="max_lines must be a whole number of at least 1"):
        ParseLimits(max_lines=0)
    with pytest.raises(BadFileError, match="parser option 'limits' must be a ParseLimits, not dict"):
        parse(HEADER + GOOD, limits={"max_lines": 5})  # type: ignore[arg-type]


def test_a_compressed_stream_is_the_same_file_as_its_plain_text_under_the_limits():
    """The bounded reader changes nothing for an ordinary file."""
    text = HEADER + (GOOD + row(dialled=b"") + b"\n") * 500
    plain = parse(text, limits=ParseLimits(max_blank_run=1, max_line_bytes=100))
    assert parse(gzip.compress(text), limits=ParseLimits(max_blank_run=1, max_line_bytes=100)) == plain
    assert len(plain[0]) == 500 and len(plain[1]) == 500
