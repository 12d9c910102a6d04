"""Each built-in format over a realistic sample file (awkward rows included) against its golden output.

The golden files are the normalised CSV ``cdrflow parse`` writes; regenerate one after a
deliberate change with ``cdrflow parse --format F FILE -o FILE.golden`` and review the diff.
"""

import io
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from services.parser.api import find_format, known_formats, parse_file
from services.parser.output import write_csv

FIXTURES = Path(__file__).parent.parent / "fixtures" / "formats"
CASES = [
    ("asterisk-Master.csv", "asterisk"),
    ("freeswitch-Master.csv", "freeswitch"),
    ("cucm-cdr_StandAloneCluster_01_202610010915_1001.csv", "cucm"),
    ("broadworks-BW-CDR-20261001.csv", "broadworks"),
    ("gamma-cdr-20261031.csv", "gamma"),
    ("gamma-rental-sdr-202610.csv", "gamma-rental"),
    ("generic-cdr-20261001.csv", "generic-cdr"),
    ("generic-sdr-202610.csv", "generic-sdr"),
]


def render(name: str, fmt: str) -> str:
    out = io.StringIO()
    batches = parse_file(FIXTURES / name, fmt, zone=ZoneInfo("Europe/London"), options={"max_reject_share": 1.0})
    write_csv(batches, out, kind=find_format(fmt).kind)
    return out.getvalue()


def test_every_built_in_format_has_a_sample_file():
    assert sorted(fmt for _, fmt in CASES) == known_formats()


@pytest.mark.parametrize(("name", "fmt"), CASES)
def test_sample_file_parses_to_its_golden_output(name, fmt):
    assert render(name, fmt) == (FIXTURES / (name + ".golden")).read_text()
