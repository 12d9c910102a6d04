"""Files as carriers really send them: compressed, zipped in parts, in other encodings and line
endings; and a file in the wrong format failed whole with a reason an operator can act on."""

import bz2
import gzip
import io
import zipfile
from zoneinfo import ZoneInfo

import pytest

from cdrflow.errors import BadFileError
from services.parser.api import parse_stream
from tests.unit.test_formats_golden import FIXTURES

GAMMA = (FIXTURES / "gamma-cdr-20261031.csv").read_bytes()
ASTERISK = (FIXTURES / "asterisk-Master.csv").read_bytes()
GENERIC = b"cli,dialled,start,duration\n+441632960001,01174960123,2026-10-01T09:15:00,60\n"


def parse(data: bytes, fmt: str, name: str = "file.csv", **options):
    batches = list(parse_stream(io.BytesIO(data), fmt, name=name, zone=ZoneInfo("Europe/London"),
                                options={"max_reject_share": 1.0} | options))
    records = [r for b in batches for r in b.records.iter_rows(named=True)]
    return records, [r for b in batches for r in b.rejects]


def zipped(*members: tuple[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize("pack", [gzip.compress, bz2.compress, lambda d: zipped(("cdr.csv", d))],
                         ids=["gz", "bz2", "zip"])
def test_a_compressed_file_reads_exactly_as_the_plain_one(pack):
    assert parse(pack(GAMMA), "gamma") == parse(GAMMA, "gamma")


def test_a_zip_of_several_files_reads_each_with_its_own_header_and_line_numbers_run_on():
    records, _ = parse(zipped(("a.csv", GENERIC), ("b.csv", GENERIC)), "generic-cdr")
    assert [r["row"] for r in records] == [2, 4]  # b.csv's header is line 3 of the whole file


def test_the_compression_is_found_from_the_bytes_not_the_name():
    assert parse(gzip.compress(GENERIC), "generic-cdr", name="cdrs.csv")[0] == parse(GENERIC, "generic-cdr")[0]


def test_a_utf8_bom_crlf_file_reads_as_the_plain_one():
    lf = GAMMA.replace(b"\r\n", b"\n")
    assert parse(b"\xef\xbb\xbf" + lf.replace(b"\n", b"\r\n"), "gamma") == parse(lf, "gamma")


def test_old_mac_line_ends_lone_cr_read_as_lines():
    assert parse(GENERIC.replace(b"\n", b"\r"), "generic-cdr")[0] == parse(GENERIC, "generic-cdr")[0]


def test_a_cp1252_pound_sign_is_read_as_a_pound_and_the_amount_stays_exact():
    assert b'"\xa30.0010"' in GAMMA  # line 9 of the sample was saved in cp1252
    records, _ = parse(GAMMA, "gamma")
    assert [r["cost"] for r in records if r["row"] == 9] == [1000]  # £0.001 in micros
    _, rejects = parse(GAMMA.replace(b'"BRS","1","\xa30.0010"', b'"BRS","1","\xa3x"'), "gamma")
    assert "cost ('Salesprice') '£x' is not a decimal amount" in [r.reason for r in rejects]


def test_a_utf16_file_fails_saying_what_to_do():
    with pytest.raises(BadFileError, match="UTF-16 text: save it as UTF-8 or cp1252"):
        parse("cli,dialled,start,duration\n".encode("utf-16"), "generic-cdr")


def test_a_truncated_gzip_fails_as_damaged():
    with pytest.raises(BadFileError, match="file.csv: compressed data is damaged or truncated"):
        parse(gzip.compress(GAMMA * 50)[:300], "gamma")


def test_an_empty_zip_fails():
    with pytest.raises(BadFileError, match="zip archive has no files in it"):
        parse(zipped(), "gamma")


def test_a_file_in_the_wrong_format_fails_whole_naming_the_column_counts():
    nine = b'"a","b","c","d","e","f","g","h","i"\n' * 150
    with pytest.raises(BadFileError, match=r"Master.csv: 150 of 150 rows rejected \(more than 50% allowed\); "
                                           r"first at line 1: expected 21 or 18 or 16 columns, found 9: "
                                           r"is this the right format \(asterisk\)\?"):
        list(parse_stream(io.BytesIO(nine), "asterisk", name="Master.csv", zone=ZoneInfo("Europe/London")))


def test_the_reject_share_is_the_carriers_to_set():
    # 4 of 9 rows of the sample are bad: 44% fails a carrier that allows 10%, passes one that allows 50%
    with pytest.raises(BadFileError, match=r"4 of 9 rows rejected \(more than 10% allowed\)"):
        parse(ASTERISK, "asterisk", max_reject_share=0.1)
    assert len(parse(ASTERISK, "asterisk", max_reject_share=0.5)[0]) == 5


def test_the_switch_zone_is_the_carriers_to_set():
    [first, *_], _ = parse(ASTERISK, "asterisk", zone="America/New_York")
    assert first["start"].isoformat() == "2026-10-01T13:15:00+00:00"  # 09:15 EDT


def test_an_unknown_zone_in_the_carrier_options_is_a_clear_error():
    with pytest.raises(BadFileError, match="unknown time zone 'Mars/Olympus'"):
        parse(ASTERISK, "asterisk", zone="Mars/Olympus")
