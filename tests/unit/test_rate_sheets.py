"""Rate sheets are validated before they become active: every problem is reported with its
line number, and a refused sheet leaves the active version in place."""

from datetime import datetime
from decimal import Decimal

import pytest

from cdrflow.db import migrate
from cdrflow.money import from_micros
from cdrflow.runtime import Runtime
from cdrflow.settings import Settings
from services.rater.plan import RETAIL, SheetKey, Tariff
from services.rater.ratesheet import RateSheetError, read_rate_sheet
from services.rater.reference import add_cli, load_plan, load_rate_sheet, save_customer, save_tariff
from tests.unit.rating_helpers import call, plan, rate_one

GOOD = "code,destination,peak\n44,UK,0.0100\n"


def problems_of(text: str) -> list[str]:
    with pytest.raises(RateSheetError) as caught:
        read_rate_sheet(text.encode(), "deck.csv")
    return caught.value.problems


def test_gamma_style_headers_are_aliases_of_ours():
    sheet = read_rate_sheet(
        b"ChargeCode,Description,Peak Per Minute,Off Peak Per Minute,Weekend Per Minute,"
        b"Peak Call Set Up Charge,Off Peak Call Set Up Charge,Weekend Call Set Up Charge,Minimum Charge\n"
        b"UKN,UK National,0.0200,0.0100,0.0050,0.0300,0.0200,0.0100,0.0500\n")
    [row] = sheet.deck.to_dicts()
    assert row["code"] == "UKN" and row["destination"] == "UK National" and row["is_prefix"] is False
    assert [from_micros(row[c]) for c in ("peak", "offpeak", "weekend", "peak_setup", "offpeak_setup",
                                          "weekend_setup", "minimum")] == \
        [Decimal(x) for x in ("0.02", "0.01", "0.005", "0.03", "0.02", "0.01", "0.05")]


def test_header_names_are_case_and_space_insensitive():
    sheet = read_rate_sheet(b" Code , PEAK ,Off Peak,Increments\n44,0.0100,0.0050,60/60\n")
    [row] = sheet.deck.to_dicts()
    assert (row["code"], row["peak"], row["offpeak"], row["initial"], row["subsequent"]) == \
        ("44", 10_000, 5_000, 60, 60)


def test_duplicate_codes_are_reported_with_both_lines():
    assert problems_of("code,peak\n44,0.01\n441,0.02\n44,0.03\n") == ["line 4: duplicate code 44 (first on line 2)"]


def test_negative_and_non_numeric_rates_are_reported_per_line():
    assert problems_of("code,peak,setup\n44,-0.01,0\n441,abc,0\n442,0.01,1e-3\n") == [
        "line 2: peak -0.01 is negative",
        "line 3: peak abc is not an amount (digits, up to 6 decimal places)",
        "line 4: setup 1e-3 is not an amount (digits, up to 6 decimal places)",
    ]


@pytest.mark.parametrize("increments", ["60", "0/60", "60/0", "a/b", "60/6/6"])
def test_bad_increments_are_refused(increments):
    assert problems_of(f"code,peak,increments\n44,0.01,{increments}\n") == [
        f"line 2: increments {increments} is not I/S with I and S whole seconds of at least 1"]


def test_a_sheet_without_code_or_peak_column_is_refused_at_line_1():
    assert problems_of("prefix_name,rate\n44,0.01\n") == [
        "line 1: header has no code column (found: prefix_name, rate)",
        "line 1: header has no peak column (found: prefix_name, rate)",
    ]


def test_a_refused_sheet_leaves_the_active_version_in_place(tmp_path):
    settings = Settings(data_dir=tmp_path)
    migrate(settings.effective_database_url)
    runtime = Runtime(settings, "test")
    key = SheetKey(RETAIL, "standard", "outbound")
    with runtime.database.transaction() as session:
        save_tariff(session, Tariff("standard"))
        load_rate_sheet(session, runtime.store, GOOD.encode(), source_name="v1.csv", kind=RETAIL,
                        owner="standard", direction="outbound")
    with pytest.raises(RateSheetError, match="line 3: duplicate code 44"):
        with runtime.database.transaction() as session:
            load_rate_sheet(session, runtime.store, b"code,peak\n44,0.5\n44,0.6\n", source_name="v2.csv",
                            kind=RETAIL, owner="standard", direction="outbound")
    with runtime.database.transaction() as session:
        active = load_plan(session, runtime.store, settings.zone).sheets[key]
    assert active.name == "v1.csv"
    assert active.deck["peak"].to_list() == [10_000]
    runtime.database.dispose()


def test_a_new_valid_version_replaces_the_old_one(tmp_path):
    settings = Settings(data_dir=tmp_path)
    migrate(settings.effective_database_url)
    runtime = Runtime(settings, "test")
    with runtime.database.transaction() as session:
        save_tariff(session, Tariff("standard"))
        save_customer(session, "ACME", "Acme Widgets Ltd", "standard")
        add_cli(session, "ACME", "+441632960001")
        for n, peak in ((1, "0.0100"), (2, "0.0200")):
            version = load_rate_sheet(session, runtime.store, f"code,peak\n44,{peak}\n".encode(),
                                      source_name=f"v{n}.csv", kind=RETAIL, owner="standard", direction="outbound")
            assert version.version == n
    with runtime.database.transaction() as session:
        the_plan = load_plan(session, runtime.store, settings.zone)
    runtime.database.dispose()
    # 60 s at the second version's 0.02/min: 0.02, not the first version's 0.01
    rated = rate_one(the_plan, call(datetime(2026, 10, 6, 10, 0), 60, dialled="+441174960123"))
    assert rated["charge"] == Decimal("0.02")


def test_the_helper_plan_rates_from_the_sheet_it_was_given():
    """Guards the other tests' helper: a plan built from a sheet prices by that sheet."""
    rated = rate_one(plan("code,peak\n44,0.0300\n"), call(datetime(2026, 10, 6, 10, 0), 120))
    assert rated["charge"] == Decimal("0.06")
