"""``cdrflow parse`` and ``cdrflow formats``: what an operator types and sees."""

import gzip

import pytest
from click.testing import CliRunner

from cdrflow_app.cli import main
from cdrflow.db import migrate
from cdrflow.settings import Settings
from tests.unit.test_formats_custom import ACME, ACME_FILE
from tests.unit.test_formats_golden import FIXTURES

HEADER = "row,cli,dialled,start,end,duration,billable_seconds,answered,charge_code,cost,account_code,direction,status,reason"


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("CDRFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("CDRFLOW_DATABASE_URL", raising=False)
    migrate(Settings(data_dir=tmp_path).effective_database_url)
    runner = CliRunner()
    return lambda *args: runner.invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_parse_writes_the_normalised_csv_and_prints_the_counts(cli, tmp_path):
    out = tmp_path / "out.csv"
    packed = tmp_path / "Master.csv.gz"
    packed.write_bytes(gzip.compress((FIXTURES / "asterisk-Master.csv").read_bytes()))
    result = cli("parse", "--format", "asterisk", packed, "-o", out)
    assert result.exit_code == 0, result.output
    assert result.output == f"Master.csv.gz: 9 rows: 5 calls, 4 rejected -> {out}\n"
    lines = out.read_text().splitlines()
    assert lines[0] == HEADER
    assert out.read_text() == (FIXTURES / "asterisk-Master.csv.golden").read_text()


def test_parse_of_a_file_in_the_wrong_format_fails_and_leaves_no_half_written_output(cli, tmp_path):
    out = tmp_path / "out.csv"
    result = cli("parse", "--format", "gamma", FIXTURES / "asterisk-Master.csv", "-o", out)
    assert result.exit_code == 1
    assert "cdrflow: error: asterisk-Master.csv: line 1: not a gamma file: header lacks" in result.output
    assert not out.exists() and not list(tmp_path.glob("out.csv*"))


def test_parse_reads_with_a_definition_file_and_the_switch_zone_given(cli, tmp_path):
    (tmp_path / "acme.toml").write_text(ACME)
    (tmp_path / "acme.txt").write_text(ACME_FILE)
    result = cli("parse", "--format", tmp_path / "acme.toml", "--zone", "UTC", "--max-reject-share", "1",
                 tmp_path / "acme.txt", "-o", tmp_path / "out.csv")
    assert result.output.startswith("acme.txt: 4 rows: 1 calls, 2 rejected, 1 skipped")
    assert "2026-10-24T23:59:30+00:00" in (tmp_path / "out.csv").read_text()


def test_formats_lists_built_in_and_custom_formats_and_a_carrier_can_be_given_one(cli, tmp_path):
    (tmp_path / "acme.toml").write_text(ACME)
    assert cli("formats", "add", tmp_path / "acme.toml").output == "format acme-switch (cdr) saved, version 1\n"
    listing = cli("formats").output.splitlines()
    assert [line.split()[0] for line in listing] == ["asterisk", "broadworks", "cucm", "freeswitch", "gamma",
                                                     "gamma-rental", "generic-cdr", "generic-sdr", "acme-switch"]
    assert listing[-1].split()[1:3] == ["cdr", "custom"]
    assert cli("carriers", "add", "ACME", "--name", "Acme").exit_code == 0
    used = cli("formats", "use", "ACME", "--format", "acme-switch", "--zone", "Europe/Paris")
    assert used.output == "carrier ACME: cdr files read as acme-switch in Europe/Paris\n"
    assert cli("formats", "show", "acme-switch").output == ACME
    # once saved, the custom format is known to parse by name
    (tmp_path / "acme.txt").write_text(ACME_FILE)
    assert cli("parse", "--format", "acme-switch", "--max-reject-share", "1", tmp_path / "acme.txt").exit_code == 0


def test_formats_add_of_a_bad_definition_says_which_key(cli, tmp_path):
    (tmp_path / "bad.toml").write_text(ACME.replace("cost = 6", "costs = 6"))
    result = cli("formats", "add", tmp_path / "bad.toml")
    assert result.exit_code == 1 and "unknown field 'fields.costs'" in result.output


def test_formats_detect_suggests_and_changes_nothing(cli):
    result = cli("formats", "detect", FIXTURES / "broadworks-BW-CDR-20261001.csv")
    lines = result.output.splitlines()
    assert lines[0] == "broadworks-BW-CDR-20261001.csv: likely broadworks"
    assert lines[1].split()[0] == "broadworks"
    assert lines[-1].startswith("This is a suggestion only")


def test_formats_and_the_mail_gateways_listings_give_json_for_scripts(cli, tmp_path):
    import orjson

    (tmp_path / "acme.toml").write_text(ACME)
    cli("formats", "add", tmp_path / "acme.toml")
    listed = orjson.loads(cli("formats", "--json").output)
    assert [f["format"] for f in listed][-1] == "acme-switch"
    assert listed[-1] | {"description": ""} == {"format": "acme-switch", "kind": "cdr", "origin": "custom v1",
                                                "description": ""}
    assert orjson.loads(cli("mail", "messages", "--json").output) == []
    addresses = orjson.loads(cli("mail", "addresses", "--json").output)
    assert addresses["any_carrier"].startswith("cdrs@") and isinstance(addresses["carriers"], list)
