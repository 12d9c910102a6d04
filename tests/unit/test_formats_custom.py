"""Custom formats without code: an operator's TOML definition reads a new carrier's layout, is
checked when saved, is kept in the database, and is found by the parser for that carrier with
the carrier's own options (its switch's zone, its reject share)."""

import io
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from starlette.testclient import TestClient

from cdrflow.db import migrate
from cdrflow.db.models import Carrier
from cdrflow.errors import BadFileError, InputError
from cdrflow.reference import add_carrier
from cdrflow.runtime import Runtime
from cdrflow.settings import Settings
from services.admin.app import create_app
from services.parser.api import parse_stream
from services.parser.custom import custom_formats, list_formats, remove_format, save_format, set_carrier_format
from services.parser.definition import FormatDefinitionError, definition_from_toml
from services.parser.formats import carrier_format
from tests.authhelp import authed

ACME = """
name = "acme-switch"
kind = "cdr"
description = "Acme softswitch: semicolon-separated, no header, times in Paris, durations in ms"
zone = "Europe/Paris"

[csv]
delimiter = ";"
header = false
widths = [7]

[rows]
column = 7
values = ["CALL"]   # REG and OPT lines are not calls

[fields]
cli = 1
dialled = { column = 2, strip = "'" }
start = { columns = [3, 4], format = "%d.%m.%Y %H:%M:%S" }
duration = { column = 5, unit = "ms" }
cost = 6
"""
ACME_FILE = (
    "33142685300;'0033612345678';24.10.2026;23:59:30;61001;0.0123;CALL\n"
    "33142685300;;25.10.2026;00:10:00;1000;0;CALL\n"
    "33142685300;0612345678;25.10.2026;00:11:00;0;0;REG\n"
    "33142685300;0612345678;25.10.2026;00:12:00;-5;0;CALL\n"
)


def parse(definition, text: str, **options):
    batches = list(parse_stream(io.BytesIO(text.encode()), definition, name="acme.txt", zone=ZoneInfo("UTC"),
                                options={"max_reject_share": 1.0} | options))
    return ([r for b in batches for r in b.records.iter_rows(named=True)], [r for b in batches for r in b.rejects],
            sum(b.skipped for b in batches))


def test_a_custom_definition_reads_a_semicolon_file_by_position_in_its_own_zone_and_unit():
    [call], rejects, skipped = parse(definition_from_toml(ACME), ACME_FILE)
    assert call == {"row": 1, "cli": "33142685300", "dialled": "0033612345678",
                    "start": datetime(2026, 10, 24, 21, 59, 30, tzinfo=UTC),  # 23:59:30 CEST
                    "end": None, "duration": 62, "answered": True,  # 61.001 s bills as 62 started seconds
                    "charge_code": None, "cost": 12_300, "account_code": None, "direction": None}
    assert [(r.row, r.reason) for r in rejects] == [(2, "dialled (column 2) is empty"),
                                                    (4, "duration (column 5) '-5' is negative")]
    assert skipped == 1


def test_the_carriers_zone_beats_the_definitions():
    [call], _, _ = parse(definition_from_toml(ACME), ACME_FILE, zone="Europe/London")
    assert call["start"] == datetime(2026, 10, 24, 22, 59, 30, tzinfo=UTC)  # 23:59:30 BST


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('name = "acme-switch"', 'name = "Acme Switch"'), "'name' must be lower-case letters"),
        (('delimiter = ";"', 'delimiter = ";;"'), "'csv.delimiter' must be one character"),
        (("cost = 6", "costs = 6"), "unknown field 'fields.costs' for a cdr format"),
        (("cli = 1", 'cli = "caller"'), "'fields.cli.column' names column 'caller', but the format has no header row"),
        (('zone = "Europe/Paris"', 'zone = "Europe/Pariss"'), "'zone' is not a known time zone: 'Europe/Pariss'"),
        (('unit = "ms"', 'unit = "hours"'), "'fields.duration.unit' must be s, ms, cs or min"),
        (("cli = 1\n", ""), "a cdr format needs fields cli"),
        (("[rows]", "[rowz]"), "unknown key(s) rowz"),
        (("cost = 6", "cost = 6 6"), "not valid TOML"),
    ],
)
def test_a_mistake_in_a_definition_is_refused_naming_the_key(change, message):
    with pytest.raises(FormatDefinitionError, match=f"^acme.toml: .*{message[:40]}".replace("(", r"\(").replace(")", r"\)")):
        definition_from_toml(ACME.replace(*change), origin="acme.toml")


@pytest.fixture
def db(tmp_path):
    settings = Settings(data_dir=tmp_path)
    migrate(settings.effective_database_url)
    runtime = Runtime(settings, "test")
    with runtime.database.transaction() as session:
        add_carrier(session, "ACME", "Acme Telecom", "generic-cdr")
    yield runtime
    runtime.database.dispose()


def test_a_saved_format_is_versioned_listed_and_found_for_its_carrier_with_the_carriers_options(db):
    with db.database.transaction() as session:
        assert save_format(session, ACME)[1] == 1
        assert save_format(session, ACME.replace("0.0123", ""))[1] == 2
        set_carrier_format(session, "ACME", "cdr", "acme-switch", zone="Europe/London", max_reject_share=0.05)
    with db.database.transaction() as session:
        assert "acme-switch" in custom_formats(session)
        assert ("acme-switch", "custom v2") in [(f.name, f.origin) for f in list_formats(session)]
        definition, options = carrier_format(session, session.get(Carrier, "ACME"), "cdr")
    assert definition.name == "acme-switch"
    assert options == {"zone": "Europe/London", "max_reject_share": 0.05}


def test_a_carrier_without_a_setting_reads_its_cdrs_in_its_file_format(db):
    with db.database.transaction() as session:
        definition, options = carrier_format(session, session.get(Carrier, "ACME"), "cdr")
    assert (definition.name, options) == ("generic-cdr", {})


def test_an_sdr_file_of_a_carrier_with_only_a_cdr_format_fails_saying_what_to_set(db):
    with db.database.transaction() as session, pytest.raises(BadFileError, match="set the carrier's sdr format"):
        carrier_format(session, session.get(Carrier, "ACME"), "sdr")


def test_a_custom_format_may_not_take_a_built_in_name(db):
    with db.database.transaction() as session, pytest.raises(FormatDefinitionError, match="'gamma' is a built-in"):
        save_format(session, ACME.replace('name = "acme-switch"', 'name = "gamma"'))


def test_a_format_a_carrier_uses_cant_be_removed(db):
    with db.database.transaction() as session:
        save_format(session, ACME)
        set_carrier_format(session, "ACME", "cdr", "acme-switch")
    with db.database.transaction() as session, pytest.raises(InputError, match="used by carrier\\(s\\) ACME"):
        remove_format(session, "acme-switch")


@pytest.mark.parametrize(
    ("kind", "fmt", "zone", "message"),
    [("sdr", "acme-switch", None, "'acme-switch' is a cdr format: it can't read sdr files"),
     ("cdr", "nope", None, "unknown file format 'nope'"),
     ("cdr", "asterisk", "Moon/Base", "'zone' is not a known time zone")],
)
def test_a_carrier_setting_is_checked_when_saved(db, kind, fmt, zone, message):
    with db.database.transaction() as session:
        save_format(session, ACME)
    with db.database.transaction() as session, pytest.raises(InputError, match=message):
        set_carrier_format(session, "ACME", kind, fmt, zone=zone)


def test_formats_are_defined_and_given_to_carriers_over_the_api(db):
    with authed(TestClient(create_app(db)), db) as client:
        saved = client.post("/formats", content=ACME.encode(), headers={"content-type": "application/toml"})
        assert saved.status_code == 201 and saved.json() == {"name": "acme-switch", "kind": "cdr", "version": 1}
        bad = client.post("/formats", content=ACME.replace("cost = 6", "costs = 6").encode())
        assert bad.status_code == 422 and "unknown field 'fields.costs'" in bad.json()["error"]
        used = client.put("/carriers/ACME/formats/cdr", json={"format": "acme-switch", "zone": "Europe/Paris"})
        assert used.status_code == 200 and used.json()["zone"] == "Europe/Paris"
        assert client.put("/carriers/NOPE/formats/cdr", json={"format": "acme-switch"}).status_code == 422
        names = {f["name"]: f["origin"] for f in client.get("/formats").json()}
        assert names["acme-switch"] == "custom v1" and names["gamma"] == "built-in"
        assert client.get("/formats/acme-switch").json()["source"] == ACME
        assert client.delete("/formats/acme-switch").status_code == 422  # ACME uses it
        assert client.get("/formats/nope").status_code == 404


def test_the_parser_service_reads_a_carriers_file_in_its_custom_format_and_zone_and_stores_rejections(db):
    from datetime import UTC, datetime

    from cdrflow.db.models import File, RejectedRow
    from cdrflow.events import EventType
    from cdrflow.intake import FileMetadata, file_arrived
    from services.dedupe.service import Dedupe
    from services.parser.service import Parser
    from sqlalchemy import select

    with db.database.transaction() as session:
        save_format(session, ACME)
        set_carrier_format(session, "ACME", "cdr", "acme-switch", zone="Europe/London", max_reject_share=0.9)
    stored = db.store.put_bytes(ACME_FILE.encode())
    arrived = file_arrived(stored, FileMetadata("ACME", "cdr", "daily", "outbound", "acme.txt", "upload"), "test")
    with db.database.transaction() as session:
        [accepted] = [o.event for o in Dedupe(db).on_file_arrived(arrived, session)]
    assert accepted.type == EventType.FILE_ACCEPTED
    with db.database.transaction() as session:
        out = [o.event for o in Parser(db).on_file_accepted(accepted, session)]
    [batch] = [e.data for e in out if e.data["part"] == "batch"]
    start = datetime(2026, 10, 24, 22, 59, 30, tzinfo=UTC)  # 23:59:30 BST
    assert (batch["records"]["row"], batch["records"]["start_us"]) == ([1], [int(start.timestamp() * 1_000_000)])
    with db.database.transaction() as session:
        file = session.get(File, accepted.data["file_id"])
        assert (file.status, file.rows, file.rejected) == ("parsed", 4, 2)
        assert [r.row for r in session.scalars(select(RejectedRow).order_by(RejectedRow.row))] == [2, 4]
