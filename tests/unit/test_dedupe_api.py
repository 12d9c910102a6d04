"""The operator's file views and commands over the admin API (SQLite, handlers driven directly):
filters, a held file compared with what it may repeat, and commands refused on the wrong state."""

import gzip

import pytest
from starlette.testclient import TestClient

from cdrflow.db.models import Carrier
from cdrflow.events import Event
from services.admin.app import create_app
from services.dedupe.service import Dedupe
from tests.unit.test_dedupe_service import CSV, arrive
from tests.unit.test_handlers import handle, runtime, through_pipeline  # noqa: F401  (fixture)
from tests.authhelp import authed
from tests.fakes import RecordingProducer

EXTRA = b"+441632960001,01174960123,2026-10-02T23:00:00,5,0.0001\n"


@pytest.fixture
def api(runtime):
    runtime.__dict__["producer"] = RecordingProducer()
    with authed(TestClient(create_app(runtime)), runtime) as client:
        yield client


def sent_command(runtime) -> Event:
    return runtime.producer.sent[-1][2]


def test_files_list_filters_by_carrier_kind_status_and_billing_period(runtime, api):
    through_pipeline(runtime, "gamma-cdr-20261001.csv", "gamma")
    through_pipeline(runtime, "btw-cdr-20261002.csv", "btw")
    held = arrive(runtime)
    names = lambda **q: sorted(f["original_name"] for f in api.get("/files", params=q).json())  # noqa: E731
    assert names(carrier="btw") == ["btw-cdr-20261002.csv"]
    assert names(status="held") == ["gamma-cdr-20261001.csv"]
    assert names(kind="sdr") == []
    assert names(month="2026-10", status="rated") == ["btw-cdr-20261002.csv", "gamma-cdr-20261001.csv"]
    assert names(month="2026-09") == []
    assert api.get("/files", params={"month": "October"}).status_code == 422
    assert held.subject in [f["file_id"] for f in api.get("/files", params={"status": "held"}).json()]


def test_a_held_zipped_copy_is_shown_with_its_candidate_and_identical_content(runtime, api):
    original = through_pipeline(runtime, "gamma-cdr-20261001.csv", "gamma")
    held = arrive(runtime, gzip.compress(CSV), name="gamma-cdr-20261001.csv.gz", channel="mailgate")
    view = api.get(f"/files/{held.subject}").json()
    assert view["status"] == "held" and view["hold_reason"] == "duplicate"
    assert [(c["file_id"], c["channel"], c["status"]) for c in view["candidates"]] == [
        (original.subject, "upload", "rated")]
    [comparison] = view["comparisons"]
    assert comparison["identical_content"] is True and comparison["first_difference"] is None
    assert comparison["this"] == comparison["candidate"]
    assert comparison["this"]["rows"] == 8 and comparison["this"]["rejected"] == 1


def test_a_same_name_file_is_compared_row_counts_date_ranges_and_first_differing_row(runtime, api):
    with runtime.database.transaction() as session:
        session.get(Carrier, "gamma").hold_same_name = True
    original = through_pipeline(runtime, "gamma-cdr-20261001.csv", "gamma")
    held = arrive(runtime, CSV.replace(b",125,", b",126,", 1) + EXTRA)
    view = api.get(f"/files/{held.subject}").json()
    [comparison] = view["comparisons"]
    assert comparison["file_id"] == original.subject
    assert (comparison["this"]["rows"], comparison["candidate"]["rows"]) == (9, 8)
    assert comparison["this"]["last"] > comparison["candidate"]["last"]
    assert comparison["this"]["first"] == comparison["candidate"]["first"]
    assert comparison["first_difference"] == {
        "line": 2, "this": "+441632960001,01174960123,2026-10-01T09:15:00,126,0.0030",
        "candidate": "+441632960001,01174960123,2026-10-01T09:15:00,125,0.0030"}


def test_show_lists_a_parsed_files_rejections(runtime, api):
    parsed = through_pipeline(runtime, "gamma-cdr-20261001.csv", "gamma")
    view = api.get(f"/files/{parsed.subject}").json()
    assert view["rejections_total"] == 1
    assert view["rejections"][0]["row"] == 9 and "not-a-date" in view["rejections"][0]["reason"]
    assert api.get("/files/00000000-0000-0000-0000-000000000000").status_code == 404


def test_release_sends_a_command_with_who_and_why_and_a_repeat_is_answered_already(runtime, api):
    arrive(runtime)
    held = arrive(runtime)
    reply = api.post(f"/files/{held.subject}/release", json={"reason": "re-issued by carrier"},
                     headers={"x-operator": "sam"})
    assert reply.status_code == 202
    command = sent_command(runtime)
    assert command.data == {"command": "release", "file_id": held.subject, "operator": "sam",
                            "reason": "re-issued by carrier"}
    handle(runtime, Dedupe(runtime).on_admin_command, command)
    again = api.post(f"/files/{held.subject}/release", json={"reason": "again"})
    assert again.status_code == 200 and again.json()["already"] is True
    assert len(runtime.producer.sent) == 1


def test_commands_on_the_wrong_state_are_refused_with_the_reason(runtime, api):
    accepted = arrive(runtime)
    held = arrive(runtime)
    refused = api.post(f"/files/{accepted.subject}/release", json={"reason": "x"})
    assert refused.status_code == 409
    assert refused.json()["error"] == (f"file {accepted.subject} is accepted, not held: only a held file "
                                       "(a Potential Duplicate or same name) can be released")
    api.post(f"/files/{held.subject}/discard", json={"reason": "copy"}, headers={"x-operator": "kim"})
    handle(runtime, Dedupe(runtime).on_admin_command, sent_command(runtime))
    late = api.post(f"/files/{held.subject}/release", json={"reason": "changed my mind"})
    assert late.status_code == 409 and f"file {held.subject} was discarded by kim at" in late.json()["error"]
    assert api.post(f"/files/{held.subject}/approve").status_code == 404
    assert len(runtime.producer.sent) == 1


def test_overlap_commands_need_a_file_with_overlapping_calls_and_repeat_as_already(runtime, api):
    from services.invoicer.service import Invoicer
    from tests.unit.test_dedupe_overlap import DAY_CALLS, NEW, csv, through

    daily = through(runtime, csv(DAY_CALLS[1]), "gamma-20261001.csv")
    monthly = through(runtime, csv(DAY_CALLS[1] + NEW), "gamma-202610.csv", "monthly")
    refused = api.post(f"/files/{daily}/bill-overlaps", json={"reason": "x"})
    assert refused.status_code == 409
    assert refused.json()["error"] == f"file {daily} has no overlapping calls: nothing to bill or skip"
    assert api.post(f"/files/{monthly}/skip-overlaps", json={"reason": "x"}).json()["already"] is True
    view = api.get(f"/files/{monthly}").json()
    assert (view["overlapping_calls"], view["overlap_policy"]) == (2, "skip")
    assert view["overlaps"] == "overlaps 2 call(s) of file(s) gamma-20261001.csv"
    assert api.post(f"/files/{monthly}/bill-overlaps", json={"reason": "re-rated"},
                    headers={"x-operator": "sam"}).status_code == 202
    handle(runtime, Invoicer(runtime).on_admin_command, sent_command(runtime))
    assert api.get(f"/files/{monthly}").json()["overlap_policy"] == "bill"
    assert api.post(f"/files/{monthly}/bill-overlaps", json={"reason": "again"}).json()["already"] is True
    assert len(runtime.producer.sent) == 1


def cli(api, monkeypatch, *args):
    """``cdrflow files …`` with its admin client talking to the app in-process."""
    from click.testing import CliRunner

    from cdrflow import client as client_module
    from cdrflow_app.cli import main

    class InProcessClient(client_module.AdminClient):
        def __init__(self, base_url, timeout=60, **_):
            self.base_url, self._http, self._token, self._token_file = base_url, api, None, None

    monkeypatch.setattr(client_module, "AdminClient", InProcessClient)
    return CliRunner().invoke(main, ["files", *args])


def test_files_show_prints_candidates_and_the_comparison_and_release_needs_a_reason(runtime, api, monkeypatch):
    with runtime.database.transaction() as session:
        session.get(Carrier, "gamma").hold_same_name = True
    original = through_pipeline(runtime, "gamma-cdr-20261001.csv", "gamma")
    held = arrive(runtime, CSV.replace(b",125,", b",126,", 1) + EXTRA, channel="mailgate")
    shown = cli(api, monkeypatch, "show", held.subject)
    assert shown.exit_code == 0, shown.output
    assert "potential duplicate of (same name):" in shown.output
    assert f"  {original.subject}  rated     gamma via upload at" in shown.output
    assert "    this      9 rows (1 rejected), 2026-10-01T08:15:00+00:00 .. 2026-10-02T22:00:00+00:00" in shown.output
    assert "    first difference at line 2:" in shown.output
    assert "      candidate: +441632960001,01174960123,2026-10-01T09:15:00,125,0.0030" in shown.output
    listed = cli(api, monkeypatch, "--status", "held", "--carrier", "gamma")
    header, row = listed.output.splitlines()  # a header row, then the one held file
    assert header.split() == ["file_id", "status", "carrier", "kind", "period", "received_at", "original_name",
                              "status_reason", "overlaps"]
    assert row.startswith(f"{held.subject}  held ")
    no_reason = cli(api, monkeypatch, "release", held.subject)
    assert no_reason.exit_code == 2 and "Missing option '--reason'" in no_reason.output
    released = cli(api, monkeypatch, "release", held.subject, "--reason", "new batch", "--operator", "sam")
    assert released.exit_code == 0 and released.output == f"release of {held.subject} requested\n"
    assert sent_command(runtime).data["operator"] == "sam"
    refused = cli(api, monkeypatch, "discard", original.subject, "--reason", "x")
    assert refused.exit_code == 1 and "is rated, not held" in refused.output
