"""`cdrflow rate`: the offline CLI prices CDR files with the service's engine, writes one row
per input row (rejected rows too, with their reason) and prints the totals."""

import csv
from pathlib import Path

from click.testing import CliRunner

from cdrflow_app.cli import main

RATES = """code,destination,peak,offpeak,weekend,setup,minimum,increments
44,UK geographic,0.0150,0.0100,0.0050,0,0,1/1
447,UK mobile,0.0400,0.0300,0.0200,0.0100,0,60/60
"""
CDRS = """cli,dialled,start,duration,cost
+441632960001,01174960123,2026-10-06T10:00:00,120,
+441632960001,07700900123,2026-10-06T19:00:00,61,0.0100
+441999000000,01174960123,2026-10-10T10:00:00,60,
+441632960001,+81312345678,2026-10-06T10:00:00,60,
+441632960001,01174960123,yesterday,60,
"""


def run_rate(tmp_path: Path, *extra: str) -> tuple[str, list[dict[str, str]]]:
    (tmp_path / "rates.csv").write_text(RATES)
    (tmp_path / "cdrs.csv").write_text(CDRS)
    (tmp_path / "customers.csv").write_text("customer,cli\nACME,+441632960001\n")
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(main, ["rate", "--rates", str(tmp_path / "rates.csv"), *extra,
                                       str(tmp_path / "cdrs.csv"), "-o", str(out)],
                                env={"CDRFLOW_DATA_DIR": str(tmp_path / "data")})
    assert result.exit_code == 0, result.output
    with out.open(newline="") as fh:
        return result.output, list(csv.DictReader(fh))


def test_rate_writes_the_documented_header_and_one_row_per_input_row(tmp_path):
    _, rows = run_rate(tmp_path, "--customers", str(tmp_path / "customers.csv"))
    assert list(rows[0]) == ["row", "cli", "dialled", "start", "duration", "customer", "code", "destination", "band",
                             "billable_seconds", "charge", "cost", "status", "reason"]
    assert [r["row"] for r in rows] == ["2", "3", "4", "5", "6"]


def test_rate_prices_matches_and_sends_the_rest_to_reconciliation(tmp_path):
    output, rows = run_rate(tmp_path, "--customers", str(tmp_path / "customers.csv"))
    by_row = {r["row"]: r for r in rows}
    # 120 s peak at 0.015/min = 0.03
    assert (by_row["2"]["customer"], by_row["2"]["code"], by_row["2"]["band"], by_row["2"]["charge"]) == \
        ("ACME", "44", "peak", "0.0300")
    assert by_row["2"]["start"] == "2026-10-06T10:00:00+01:00"  # London summer time, with its offset
    # 61 s offpeak, 60/60 → 120 s at 0.03/min + 0.01 set-up = 0.07; the CDR's own cost kept
    assert (by_row["3"]["band"], by_row["3"]["billable_seconds"], by_row["3"]["charge"], by_row["3"]["cost"]) == \
        ("offpeak", "120", "0.0700", "0.0100")
    assert (by_row["4"]["status"], by_row["4"]["reason"]) == ("unmatched", "no customer has CLI 441999000000")
    assert by_row["5"]["status"] == "unrated"
    assert by_row["6"]["status"] == "rejected" and "start" in by_row["6"]["reason"]
    assert "2 rated, 1 unmatched, 1 unrated, 1 rejected; total charge 0.1000" in output


def test_without_customers_every_call_is_rated_against_the_sheet(tmp_path):
    output, rows = run_rate(tmp_path)
    assert {r["row"]: r["status"] for r in rows} == {"2": "rated", "3": "rated", "4": "rated", "5": "unrated",
                                                     "6": "rejected"}
    assert "3 rated, 0 unmatched, 1 unrated, 1 rejected" in output


def test_negative_amounts_are_written_exactly():
    """A carrier's credit (a negative cost) keeps its sign and digits: -0.01 is not -1.99."""
    import polars as pl

    from services.rater.offline import _money_text

    micros = pl.Series("cost", [-10_000, -1_230_000, -5, 1_234_567, 0])
    assert pl.DataFrame([micros]).select(_money_text(micros))["cost"].to_list() == [
        "-0.0100", "-1.2300", "-0.000005", "1.234567", "0.0000"]  # six places only where needed
    whole = pl.Series("cost", [-10_000, -1_230_000, 0])
    assert pl.DataFrame([whole]).select(_money_text(whole))["cost"].to_list() == ["-0.0100", "-1.2300", "0.0000"]
