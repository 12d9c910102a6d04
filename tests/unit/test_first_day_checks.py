"""An operator's first day (issue 12, "The documented path"): a carrier's format is checked when
it is set and a file in the wrong format says which to set; ``files --status`` takes the
operator's words and refuses a status that doesn't exist; "Monday to Sunday, 00:00 to 23:59" is
the whole week; a CLI inside another customer's wider CLI is allowed, said, and wins."""

from datetime import date, datetime

import polars as pl
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from cdrflow_app.cli import main
from cdrflow.db import migrate
from cdrflow.db.models import Carrier, File
from cdrflow.errors import InputError
from cdrflow.filestatus import FILE_STATUSES, file_status
from cdrflow.intake import FileMetadata, file_arrived
from cdrflow.reference import add_carrier
from cdrflow.runtime import Runtime
from cdrflow.settings import Settings
from services.admin.app import create_app
from services.dedupe.service import Dedupe
from services.parser.custom import UnknownFormatError, save_carrier, set_carrier_format
from services.parser.service import Parser
from services.rater.clis import CliDirectory, CliEntry
from services.rater.plan import Tariff
from services.rater.reference import add_cli_with_warnings, load_customers_csv, save_customer, save_tariff
from services.rater.schedule import Schedule, ScheduleError
from tests.unit.test_formats_custom import ACME
from tests.unit.test_formats_golden import FIXTURES
from tests.authhelp import authed

BUILT_IN = "asterisk, broadworks, cucm, freeswitch, gamma, gamma-rental, generic-cdr, generic-sdr"


@pytest.fixture
def runtime(tmp_path):
    settings = Settings(data_dir=tmp_path)
    migrate(settings.effective_database_url)
    rt = Runtime(settings, "test")
    yield rt
    rt.database.dispose()


@pytest.fixture
def cli(tmp_path, monkeypatch, runtime):
    monkeypatch.setenv("CDRFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("CDRFLOW_DATABASE_URL", raising=False)
    monkeypatch.setenv("CDRFLOW_ADMIN_PORT", "9")  # nothing listens: a command that calls the API would fail
    runner = CliRunner()
    return lambda *args: runner.invoke(main, [str(a) for a in args], catch_exceptions=False)


# --- a carrier's format is checked when it is set ----------------------------------------------


def test_carriers_add_refuses_an_unknown_format_listing_built_in_and_custom_formats(cli, tmp_path, runtime):
    (tmp_path / "acme.toml").write_text(ACME)
    assert cli("formats", "add", tmp_path / "acme.toml").exit_code == 0
    refused = cli("carriers", "add", "btw", "--name", "BT Wholesale", "--format", "nosuch")
    assert refused.exit_code == 1
    assert f"unknown file format 'nosuch' (known: acme-switch, {BUILT_IN})" in refused.output
    assert "'cdrflow formats add FILE.toml'" in refused.output
    with runtime.database.transaction() as session:
        assert session.get(Carrier, "btw") is None
    assert cli("carriers", "add", "btw", "--name", "BT Wholesale", "--format", "acme-switch").exit_code == 0


def test_carriers_add_refuses_an_sdr_format_for_the_carriers_cdr_files_and_says_how_to_set_it(cli):
    refused = cli("carriers", "add", "btw", "--name", "BT Wholesale", "--format", "generic-sdr")
    assert refused.exit_code == 1
    assert ("'generic-sdr' is a sdr format: it can't read cdr files (for sdr files: "
            "'cdrflow formats use btw --kind sdr --format generic-sdr')") in refused.output


def test_carriers_add_of_a_carrier_named_like_a_built_in_format_reads_its_files_in_that_format(cli, runtime):
    added = cli("carriers", "add", "gamma", "--name", "Gamma Telecom")
    assert added.exit_code == 0
    assert added.output.splitlines()[0] == ("carrier gamma saved: its CDR files are read as gamma "
                                            "(the built-in format of that name)")
    with runtime.database.transaction() as session:
        assert session.get(Carrier, "gamma").file_format == "gamma"


def test_carriers_add_of_another_carrier_says_the_default_format_and_how_to_change_it(cli, runtime):
    added = cli("carriers", "add", "btw", "--name", "BT Wholesale")
    assert added.output.splitlines() == [
        "carrier btw saved: its CDR files are read as generic-cdr (the default)",
        "  change it with 'cdrflow formats use btw --kind cdr --format F' ('cdrflow formats' lists them; "
        "'cdrflow formats detect FILE' suggests one); SDR files: --kind sdr"]


def test_carriers_add_again_without_a_format_keeps_the_carriers_format_and_names_its_setting(cli, runtime):
    cli("carriers", "add", "btw", "--name", "BT", "--format", "cucm")
    cli("formats", "use", "btw", "--kind", "cdr", "--format", "asterisk")
    renamed = cli("carriers", "add", "btw", "--name", "BT Wholesale")
    assert renamed.output.splitlines()[:2] == [
        "carrier btw saved: its CDR files are read as cucm (as before)",
        "  (its 'formats use' setting reads them as asterisk instead)"]
    with runtime.database.transaction() as session:
        assert (session.get(Carrier, "btw").name, session.get(Carrier, "btw").file_format) == ("BT Wholesale", "cucm")


def test_save_carrier_names_why_it_chose_the_format(runtime):
    with runtime.database.transaction() as session:
        assert save_carrier(session, "cucm", "Cluster").chosen == "named"
        assert save_carrier(session, "gamma-rental", "Gamma rentals").file_format == "generic-cdr"  # an SDR format
        assert save_carrier(session, "cucm", "Cluster", "asterisk").chosen == "given"


def test_formats_use_and_its_api_refuse_an_unknown_format_listing_the_known_ones(cli, runtime):
    cli("carriers", "add", "btw", "--name", "BT Wholesale")
    refused = cli("formats", "use", "btw", "--kind", "cdr", "--format", "nosuch")
    assert refused.exit_code == 1 and f"unknown file format 'nosuch' (known: {BUILT_IN})" in refused.output
    with authed(TestClient(create_app(runtime)), runtime) as client:
        reply = client.put("/carriers/btw/formats/cdr", json={"format": "nosuch"})
    assert reply.status_code == 422 and f"(known: {BUILT_IN})" in reply.json()["error"]
    with runtime.database.transaction() as session, pytest.raises(UnknownFormatError) as caught:
        set_carrier_format(session, "btw", "sdr", "gamma-rentals")
    assert "gamma-rental" in caught.value.known


def _parse(runtime, path, carrier):
    """The file through dedupe and the parser, as the services do; the stored file row."""
    stored = runtime.store.put_bytes(path.read_bytes())
    arrived = file_arrived(stored, FileMetadata(carrier, "cdr", "daily", "outbound", path.name, "upload"),
                           "cdrflow/admin")
    with runtime.database.transaction() as session:
        [accepted] = list(Dedupe(runtime).on_file_arrived(arrived, session))
    with runtime.database.transaction() as session:
        list(Parser(runtime).on_file_accepted(accepted.event, session))
    with runtime.database.transaction() as session:
        file = session.get(File, arrived.subject)
        return file.id, file.status, file.status_reason


def test_a_file_in_another_format_fails_naming_the_format_tried_and_the_one_detect_suggests(runtime):
    with runtime.database.transaction() as session:
        add_carrier(session, "gamma", "Gamma Telecom", "generic-cdr")  # as 'carriers add' did before
    file_id, status, reason = _parse(runtime, FIXTURES / "gamma-cdr-20261031.csv", "gamma")
    assert status == "failed"
    assert "line 1: not a generic-cdr file: header lacks cli, dialled, start" in reason
    assert reason.endswith(
        "; carrier gamma's cdr files are read as generic-cdr, but this file looks like gamma ('cdrflow formats "
        f"detect' suggests it): 'cdrflow formats use gamma --kind cdr --format gamma', then 'cdrflow files retry "
        f"{file_id}'")


def test_a_file_no_format_reads_fails_saying_a_custom_format_is_needed(runtime, tmp_path):
    with runtime.database.transaction() as session:
        add_carrier(session, "btw", "BT Wholesale", "generic-cdr")
    odd = tmp_path / "odd.csv"
    odd.write_text("caller|callee|when\n01632960001|01174960123|today\n")
    _, status, reason = _parse(runtime, odd, "btw")
    assert status == "failed" and "not a generic-cdr file: header lacks cli, dialled, start" in reason
    assert "and no known format reads this file: write one (docs/formats.md), 'cdrflow formats add FILE.toml', " \
           "then 'cdrflow formats use btw --kind cdr --format NAME'" in reason


# --- files --status ------------------------------------------------------------------------------


@pytest.mark.parametrize("words", ["held", "HELD", "potential-duplicate", "potential duplicate",
                                   "Potential Duplicate", "potential_duplicate", " Same name "])
def test_a_status_filter_takes_the_operators_words_for_held(words):
    assert file_status(words) == "held"


def test_a_status_that_does_not_exist_is_refused_with_the_ones_that_do():
    with pytest.raises(InputError) as caught:
        file_status("potentially")
    assert str(caught.value) == (f"no file status 'potentially': use one of {', '.join(FILE_STATUSES)} "
                                 "(or potential-duplicate for held)")


def test_files_status_refuses_an_unknown_status_before_asking_the_api(cli):
    refused = cli("files", "--status", "pending")
    assert refused.exit_code == 1
    assert "no file status 'pending': use one of arriving, arrived, held, accepted" in refused.output
    assert "not reachable" not in refused.output  # refused here, not by a call to the admin API


def test_the_files_api_filters_by_the_operators_words_and_refuses_a_status_that_does_not_exist(runtime):
    with runtime.database.transaction() as session:
        add_carrier(session, "gamma", "Gamma", "generic-cdr")
    sample = FIXTURES / "generic-cdr-20261001.csv"
    for _ in range(2):  # the second is held as a Potential Duplicate of the first
        stored = runtime.store.put_bytes(sample.read_bytes())
        arrived = file_arrived(stored, FileMetadata("gamma", "cdr", "daily", "outbound", sample.name, "upload"),
                               "cdrflow/admin")
        with runtime.database.transaction() as session:
            list(Dedupe(runtime).on_file_arrived(arrived, session))
    with authed(TestClient(create_app(runtime)), runtime) as client:
        held = client.get("/files", params={"status": "Potential Duplicate"})
        assert held.status_code == 200 and [f["status"] for f in held.json()] == ["held"]
        assert [f["status"] for f in client.get("/files", params={"status": "accepted"}).json()] == ["accepted"]
        refused = client.get("/files", params={"status": "dupe"})
    assert refused.status_code == 422 and "no file status 'dupe': use one of arriving" in refused.json()["error"]


# --- peak schedules ------------------------------------------------------------------------------


def test_monday_to_sunday_00_00_to_23_59_is_the_whole_week():
    flat = Schedule.from_rules("flat", "band,days,start,end\npeak,Monday to Sunday,00:00,23:59\n")
    assert set(flat.table) == {0}
    assert flat.band_at(datetime(2026, 10, 25, 23, 59, 30)) == "peak"  # Sunday's last minute


def test_an_end_of_23_59_runs_to_midnight_so_the_next_rule_can_start_at_00_00():
    rules = "band,days,start,end\npeak,Mon-Fri,00:00,23:59\nweekend,Sat-Sun,00:00,23:59\n"
    schedule = Schedule.from_rules("week", rules)
    assert schedule.band_at(datetime(2026, 10, 23, 23, 59)) == "peak"  # Friday 23:59
    assert schedule.band_at(datetime(2026, 10, 24, 0, 0)) == "weekend"  # Saturday 00:00


def test_a_schedule_that_really_leaves_a_gap_is_still_refused():
    with pytest.raises(ScheduleError, match=r"no rule covers Mon 18:00 \(1800 minute\(s\) of the week uncovered\)"):
        Schedule.from_rules("gap", "peak,Mon-Fri,08:00,18:00\noffpeak,Mon-Fri,00:00,08:00\n"
                                   "weekend,\"Sat,Sun\",00:00,23:59\n")


def test_unquoted_days_with_a_comma_get_a_hint_to_quote_them_with_the_line_number():
    with pytest.raises(ScheduleError) as caught:
        Schedule.from_rules("uk", "band,days,start,end\npeak,Mon-Fri,08:00,18:00\noffpeak,Mon-Fri,00:00,08:00\n"
                                  "offpeak,Mon-Fri,18:00,24:00\nweekend,Sat,Sun,00:00,24:00\n")
    assert caught.value.problems == ['line 5: expected band,days,start,end, found 5 field(s): days with commas '
                                     'go in quotes: "Sat,Sun"']


def test_days_that_are_no_days_are_refused_not_read_as_their_first_letters():
    with pytest.raises(ScheduleError, match="days 'Monish-Fri' are not like Mon-Fri"):
        Schedule.from_rules("odd", "peak,Monish-Fri,00:00,24:00\n")


def test_schedules_add_prints_the_quote_hint(cli, tmp_path):
    (tmp_path / "rules.csv").write_text("band,days,start,end\npeak,Mon-Fri,00:00,24:00\nweekend,Sat,Sun,00:00,24:00\n")
    refused = cli("schedules", "add", "flat", tmp_path / "rules.csv")
    assert refused.exit_code == 1 and 'line 3: expected band,days,start,end, found 5 field(s): days with commas ' \
                                      'go in quotes: "Sat,Sun"' in refused.output


# --- CLIs inside another customer's wider CLI ---------------------------------------------------


def _match(entries, numbers, carrier="gamma", day=date(2026, 10, 1)):
    directory = CliDirectory(entries)
    who = directory.match(pl.Series(numbers), pl.Series([None] * len(numbers), dtype=pl.String),
                          pl.Series([datetime(day.year, day.month, day.day, 12)] * len(numbers)), carrier)
    return [None if w is None else directory.customers[w] for w in who]


def test_a_ddi_inside_another_customers_range_takes_its_calls_and_the_range_keeps_the_rest():
    entries = [CliEntry("ACME", "range", "441632960000-441632960099"), CliEntry("BETA", "ddi", "441632960050")]
    assert _match(entries, ["441632960050", "441632960051"]) == ["BETA", "ACME"]


def test_the_narrowest_of_nested_ranges_wins_and_the_wider_keeps_what_is_outside_it():
    entries = [CliEntry("ACME", "range", "441632960000-441632960999"),
               CliEntry("BETA", "range", "441632960100-441632960199"),
               CliEntry("ZED", "range", "441632960150-441632960159")]
    assert _match(entries, ["441632960050", "441632960120", "441632960155", "441632960999"]) == \
        ["ACME", "BETA", "ZED", "ACME"]


def test_a_range_inside_a_wider_prefix_wins_and_a_prefix_inside_a_range_wins():
    # 4416329600* holds 100 twelve-digit numbers; the range 10; the prefix 44163296000* 10 of the range's 100
    entries = [CliEntry("ACME", "prefix", "4416329600"), CliEntry("BETA", "range", "441632960010-441632960019"),
               CliEntry("CORP", "range", "441632970000-441632970099"), CliEntry("DELTA", "prefix", "44163297000")]
    assert _match(entries, ["441632960015", "441632960020", "441632970005", "441632970050"]) == \
        ["BETA", "ACME", "DELTA", "CORP"]


def test_the_narrower_cli_wins_over_a_wider_one_for_the_calls_carrier():
    entries = [CliEntry("ACME", "range", "441632960000-441632960099", carrier="gamma"),
               CliEntry("BETA", "range", "441632960000-441632960009")]
    assert _match(entries, ["441632960005", "441632960050"]) == ["BETA", "ACME"]
    # a narrower range for another carrier is not in play: the wider one for this carrier is
    assert _match([entries[0], CliEntry("BETA", "range", "441632960000-441632960009", carrier="btw")],
                  ["441632960005"]) == ["ACME"]


def test_one_range_held_by_two_customers_one_after_the_other_matches_each_in_its_own_dates():
    entries = [CliEntry("ACME", "range", "441632960000-441632960099", effective_to=date(2026, 6, 1)),
               CliEntry("BETA", "range", "441632960000-441632960099", effective_from=date(2026, 6, 1))]
    assert _match(entries, ["441632960050"], day=date(2026, 5, 31)) == ["ACME"]
    assert _match(entries, ["441632960050"], day=date(2026, 6, 1)) == ["BETA"]


@pytest.fixture
def customers(runtime):
    with runtime.database.transaction() as session:
        save_tariff(session, Tariff("business"))
        for code in ("ACME", "BETA"):
            save_customer(session, code, code.title(), "business")
        session.flush()
        add_cli_with_warnings(session, "ACME", "441632960000-441632960099")
    return runtime


def test_adding_a_ddi_inside_another_customers_range_warns_naming_that_range_and_customer(customers):
    with customers.database.transaction() as session:
        added = add_cli_with_warnings(session, "BETA", "+441632960050")
        assert added.row.value == "441632960050"
        assert added.warnings == ("CLI +441632960050 lies inside range 441632960000-441632960099 of customer ACME: "
                                  "its calls go to customer BETA (the most specific CLI wins)",)
        own = add_cli_with_warnings(session, "ACME", "+441632960060")
        assert own.warnings == ()  # inside the customer's own range: nothing changes hands


def test_adding_a_wider_range_over_another_customers_ddi_warns_that_the_ddi_keeps_its_calls(customers):
    with customers.database.transaction() as session:
        added = add_cli_with_warnings(session, "BETA", "441632900000-441632999999")
    assert added.warnings == ("CLI 441632900000-441632999999 holds range 441632960000-441632960099 of customer "
                              "ACME: calls to that one stay with customer ACME (the most specific CLI wins)",)


def test_an_identical_or_partly_overlapping_range_of_another_customer_is_still_refused(customers):
    with customers.database.transaction() as session:
        with pytest.raises(InputError, match="CLI 441632960000-441632960099 overlaps range "
                                             "441632960000-441632960099 of customer ACME"):
            add_cli_with_warnings(session, "BETA", "441632960000-441632960099")
        with pytest.raises(InputError, match="CLI 441632960050-441632960149 overlaps range"):
            add_cli_with_warnings(session, "BETA", "441632960050-441632960149")
        nested = add_cli_with_warnings(session, "BETA", "441632960010-441632960019")
        assert nested.row.kind == "range" and len(nested.warnings) == 1


def test_a_customers_file_loads_nested_clis_with_a_warning_per_line_and_refuses_partial_overlaps(customers):
    with customers.database.transaction() as session:
        loaded = load_customers_csv(session, b"customer,name,tariff,cli\n"
                                             b"BETA,Beta,business,+441632960050\n"
                                             b"CORP,Corp,business,+4416329700*\n"
                                             b"DELTA,Delta,business,441632970010-441632970019\n", source="c.csv")
    assert loaded.clis_added == 3
    assert loaded.warnings == (
        "line 2: CLI +441632960050 lies inside range 441632960000-441632960099 of customer ACME: its calls go to "
        "customer BETA (the most specific CLI wins)",
        "line 4: CLI 441632970010-441632970019 lies inside prefix 4416329700 of customer CORP on line 3: its calls "
        "go to customer DELTA (the most specific CLI wins)")
    with customers.database.transaction() as session, pytest.raises(InputError) as caught:
        load_customers_csv(session, b"customer,name,tariff,cli\nBETA,Beta,business,441632960090-441632960109\n",
                           source="d.csv")
    assert "line 2: CLI 441632960090-441632960109 overlaps range 441632960000-441632960099 of customer ACME" \
        in str(caught.value)


def test_the_cli_commands_print_the_warning(cli, customers, tmp_path):
    added = cli("customers", "add", "CORP", "--name", "Corp", "--tariff", "business", "--cli", "+441632960070")
    assert added.exit_code == 0
    assert "warning: CLI +441632960070 lies inside range 441632960000-441632960099 of customer ACME" in added.output
    one = cli("clis", "add", "BETA", "441632960080-441632960089")
    assert one.exit_code == 0 and "warning: CLI 441632960080-441632960089 lies inside range" in one.output
    (tmp_path / "c.csv").write_text("customer,name,tariff,cli\nDELTA,Delta,business,+441632960001\n")
    loaded = cli("customers", "load", tmp_path / "c.csv")
    assert "1 CLI(s) added" in loaded.output
    assert "warning: line 2: CLI +441632960001 lies inside range 441632960000-441632960099 of customer ACME" \
        in loaded.output


def test_the_api_answers_with_the_warnings(customers):
    with authed(TestClient(create_app(customers)), customers) as client:
        one = client.post("/customers/BETA/clis", json={"cli": "+441632960050"})
        assert one.status_code == 201
        assert one.json()["warnings"] == ["CLI +441632960050 lies inside range 441632960000-441632960099 of "
                                          "customer ACME: its calls go to customer BETA (the most specific CLI wins)"]
        loaded = client.post("/customers/load?name=c.csv",
                             content=b"customer,name,tariff,cli\nCORP,Corp,business,+441632960051\n")
        assert loaded.status_code == 200 and loaded.json()["warnings"][0].startswith(
            "line 2: CLI +441632960051 lies inside range 441632960000-441632960099 of customer ACME")
        refused = client.post("/customers/CORP/clis", json={"cli": "441632960000-441632960099"})
    assert refused.status_code == 422 and "overlaps range 441632960000-441632960099 of customer ACME" in \
        refused.json()["error"]
