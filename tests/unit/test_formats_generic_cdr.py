"""generic-cdr through the parser library: values, reasons and line numbers."""

import io
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from cdrflow.errors import BadFileError
from services.parser.api import RejectedRow, known_formats, parse_stream

LONDON = ZoneInfo("Europe/London")
ALL = {"max_reject_share": 1.0}


def parse(text: str | bytes, name: str = "x.csv", **kw):
    data = text.encode() if isinstance(text, str) else text
    batches = list(parse_stream(io.BytesIO(data), "generic-cdr", name=name, zone=LONDON, options=kw.pop("options", ALL), **kw))
    records = [r for b in batches for r in b.records.iter_rows(named=True)]
    rejects = [r for b in batches for r in b.rejects]
    return records, rejects


def test_rows_become_call_records_with_their_line_numbers_and_exact_cost():
    [rec], [] = parse("cli,dialled,start,duration,cost\n+441,01174960123,2026-10-01T09:15:00,125,0.003")
    assert rec == {"row": 2, "cli": "+441", "dialled": "01174960123", "start": datetime(2026, 10, 1, 8, 15, tzinfo=UTC),
                   "end": None, "duration": 125, "answered": True, "charge_code": None, "cost": 3000,
                   "account_code": None, "direction": None}


def test_header_is_case_and_space_insensitive_and_columns_may_be_reordered():
    [rec], _ = parse("Duration, CLI ,Start,Dialled\n60,+441,2026-10-01T09:00:00+00:00,0800")
    assert (rec["duration"], rec["cli"], rec["start"]) == (60, "+441", datetime(2026, 10, 1, 9, 0, tzinfo=UTC))


def test_a_start_without_offset_is_read_in_the_operators_zone_across_bst():
    [summer, winter], _ = parse("cli,dialled,start,duration\n1,2,2026-07-01T12:00:00,1\n1,2,2026-12-01T12:00:00,1")
    assert (summer["start"].hour, winter["start"].hour) == (11, 12)


def test_optional_columns_answered_charge_code_account_code_direction_end():
    [rec], _ = parse("cli,dialled,start,end,duration,answered,charge_code,account_code,direction\n"
                     "1,2,2026-10-01T09:00:00Z,2026-10-01T09:01:00Z,60,no,UKN,ACC1,in")
    assert (rec["answered"], rec["duration"], rec["charge_code"], rec["account_code"], rec["direction"]) == \
        (False, 0, "UKN", "ACC1", "inbound")
    assert rec["end"] == datetime(2026, 10, 1, 9, 1, tzinfo=UTC)


def test_cost_is_converted_to_micros_exactly_without_float():
    recs, _ = parse("cli,dialled,start,duration,cost\n" + "\n".join(
        f"1,2,2026-10-01T09:00:00Z,1,{c}" for c in ["0.1", "123456789012.999999", ".5", "7", "0.1000000"]))
    assert [r["cost"] for r in recs] == [100_000, 123456789012999999, 500_000, 7_000_000, 100_000]


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("1,2,not-a-date,60", "start 'not-a-date' is not an ISO 8601 date-time"),
        ("1,2,2026-02-30T09:00:00,60", "start '2026-02-30T09:00:00' is not an ISO 8601 date-time"),
        ("1,2,2026-10-01T09:00:00,-5", "duration '-5' is negative"),
        ("1,2,2026-10-01T09:00:00,6.5", "duration '6.5' is not a whole number of seconds"),
        ("1,2,2026-10-01T09:00:00,", "duration is empty"),
        (",2,2026-10-01T09:00:00,60", "cli is empty"),
        ("1,,2026-10-01T09:00:00,60", "dialled is empty"),
        ("1,2,2026-10-01T09:00:00", "expected 4 columns, found 3"),
        ("1,2,2026-10-01T09:00:00,60,extra", "expected 4 columns, found 5"),
        ('"1,5",2,2026-10-01T09:00:00', "expected 4 columns, found 3"),
        ("1,2,2026-03-29T01:30:00,60", "start '2026-03-29T01:30:00' does not exist in Europe/London (the clocks went forward)"),
    ],
)
def test_bad_rows_are_rejected_with_line_number_and_reason(row, reason):
    [], [out] = parse(f"cli,dialled,start,duration\n{row}")
    assert out == RejectedRow(2, reason, row)


@pytest.mark.parametrize(
    ("cost", "reason"),
    [("-0.01", "must be a non-negative amount"), ("abc", "is not a decimal amount"),
     ("0.1234567", "has more than 6 decimal places"), ("1e5", "is not a decimal amount")],
)
def test_bad_costs_are_rejected(cost, reason):
    [], [out] = parse(f"cli,dialled,start,duration,cost\n1,2,2026-10-01T09:00:00,60,{cost}")
    assert out.reason == f"cost '{cost}' {reason}"


def test_the_ambiguous_hour_when_clocks_go_back_is_read_as_the_first_one():
    [rec], _ = parse("cli,dialled,start,duration\n1,2,2026-10-25T01:30:00,60")
    assert rec["start"] == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 01:30 BST, not 01:30 GMT


def test_a_cp1252_file_is_read_not_rejected():
    [rec], [] = parse(b"cli,dialled,start,duration,account_code\n1,2,2026-10-01T09:00:00,60,Caf\xe9\n")
    assert rec["account_code"] == "Café"


def test_garbage_in_a_number_is_rejected():
    [], [out] = parse("cli,dialled,start,duration\n1,ÿþ,2026-10-01T09:00:00,60")
    assert out.reason == "dialled 'ÿþ' is not a telephone number"


def test_a_file_without_the_required_header_fails_naming_what_is_missing():
    with pytest.raises(BadFileError, match="x.csv: line 1: not a generic-cdr file: header lacks dialled, duration"):
        parse("cli,start\n1,2")


def test_a_binary_file_fails():
    with pytest.raises(BadFileError, match="logo.png: not a text file"):
        parse(b"\x89PNG\r\n\x1a\n\x00\x00\xff", name="logo.png")


def test_an_empty_file_fails():
    with pytest.raises(BadFileError, match="file is empty"):
        parse(b"\n\n")


def test_blank_lines_are_skipped_but_line_numbers_stay_true():
    recs, _ = parse("cli,dialled,start,duration\n\n1,2,2026-10-01T09:00:00,60\r\n\r\n1,2,2026-10-01T09:00:00,60")
    assert [r["row"] for r in recs] == [3, 5]


def test_a_file_of_mostly_bad_rows_fails_as_a_whole_with_the_first_reason():
    text = "cli,dialled,start,duration\n" + "1,2,2026-10-01T09:00:00,60\n" + "1,2,3\n" * 200
    with pytest.raises(BadFileError, match=r"200 of 201 rows rejected \(more than 50% allowed\); first at line 3: "
                                           r"expected 4 columns, found 3: is this the right format \(generic-cdr\)\?"):
        parse(text, options={})


def test_batches_hold_at_most_batch_rows_and_cover_every_line_once():
    text = "cli,dialled,start,duration\n" + "".join(
        f"1,2,{'2026-10-01T09:00:00' if i % 7 else 'bad'},{i}\n" for i in range(1000))
    batches = list(parse_stream(io.BytesIO(text.encode()), "generic-cdr", name="x", zone=LONDON, batch_rows=64))
    assert all(b.records.height + len(b.rejects) <= 64 for b in batches)
    rows = sorted([r for b in batches for r in b.records["row"].to_list()] + [r.row for b in batches for r in b.rejects])
    assert rows == list(range(2, 1002))


def test_known_formats_include_generic_cdr():
    assert "generic-cdr" in known_formats()
