from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from cdrflow.errors import BadFileError
from services.parser.generic_cdr import parse
from services.parser.records import CallRecord, RejectedRow

LONDON = ZoneInfo("Europe/London")


def lines(text: str) -> list[bytes]:
    return [line.encode() + b"\n" for line in text.splitlines()]


def test_rows_become_call_records_with_their_line_numbers():
    out = list(parse(lines("cli,dialled,start,duration,cost\n+441,01174960123,2026-10-01T09:15:00,125,0.003"), LONDON))
    assert out == [CallRecord(2, "+441", "01174960123", datetime(2026, 10, 1, 9, 15, tzinfo=LONDON), 125, Decimal("0.003"))]


def test_header_is_case_and_space_insensitive_and_columns_may_be_reordered():
    out = list(parse(lines("Duration, CLI ,Start,Dialled\n60,+441,2026-10-01T09:00:00+00:00,0800"), LONDON))
    assert out[0].duration == 60 and out[0].cli == "+441"
    assert out[0].start == datetime(2026, 10, 1, 9, 0, tzinfo=UTC)


def test_a_start_without_offset_is_read_in_the_operators_zone_across_bst():
    [summer] = parse(lines("cli,dialled,start,duration\n1,2,2026-07-01T12:00:00,1"), LONDON)
    assert summer.start.astimezone(UTC).hour == 11


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("1,2,not-a-date,60", "start 'not-a-date' is not an ISO 8601 date-time"),
        ("1,2,2026-10-01T09:00:00,-5", "duration '-5' is not a whole number of seconds"),
        ("1,2,2026-10-01T09:00:00,6.5", "duration '6.5' is not a whole number of seconds"),
        (",2,2026-10-01T09:00:00,60", "cli is empty"),
        ("1,,2026-10-01T09:00:00,60", "dialled is empty"),
        ("1,2,2026-10-01T09:00:00", "expected 4 columns, found 3"),
    ],
)
def test_bad_rows_are_rejected_with_line_number_and_reason(row, reason):
    [out] = parse(lines(f"cli,dialled,start,duration\n{row}"), LONDON)
    assert out == RejectedRow(2, reason, row)


def test_a_line_that_is_not_utf8_is_a_rejected_row_and_the_rest_goes_through():
    data = [b"cli,dialled,start,duration\n", b"1,\xff\xfe,2026-10-01T09:00:00,60\n", b"1,2,2026-10-01T09:00:00,60\n"]
    out = list(parse(data, LONDON))
    assert isinstance(out[0], RejectedRow) and out[0].row == 2 and "not UTF-8" in out[0].reason
    assert isinstance(out[1], CallRecord) and out[1].row == 3


def test_negative_cost_is_rejected():
    [out] = parse(lines("cli,dialled,start,duration,cost\n1,2,2026-10-01T09:00:00,60,-0.01"), LONDON)
    assert isinstance(out, RejectedRow) and "non-negative" in out.reason


def test_a_file_without_the_required_header_fails_naming_what_is_missing():
    with pytest.raises(BadFileError, match="x.csv: line 1: not a generic-cdr file: header lacks dialled, duration"):
        list(parse(lines("cli,start\n1,2"), LONDON, "x.csv"))


def test_a_binary_file_fails_at_its_header():
    with pytest.raises(BadFileError, match="header is not UTF-8"):
        list(parse([b"\x89PNG\r\n\x1a\n\x00\x00\xff"], LONDON, "logo.png"))


def test_blank_lines_are_skipped_but_line_numbers_stay_true():
    out = list(parse(lines("cli,dialled,start,duration\n\n1,2,2026-10-01T09:00:00,60"), LONDON))
    assert [r.row for r in out] == [3]
