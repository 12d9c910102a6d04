"""The console's pages on the admin app (SQLite, the pipeline's handlers driven directly, the
broker faked): logging in, pages that render what the API knows, filters, and forms that
change state only through the API's command path, refused without a CSRF token or for a viewer."""

import re
from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from cdrflow.bus import Topic, topic_name
from cdrflow.db import models
from cdrflow.db.models import DeadLetter, OutboxEntry
from cdrflow.events import Event, EventType
from services.admin.accounts import add_user
from services.admin.app import create_app
from tests.unit.test_dedupe_service import arrive
from tests.unit.test_handlers import runtime, through_pipeline  # noqa: F401  (fixture)
from tests.fakes import RecordingProducer

PASSWORD = "correct horse battery"


@pytest.fixture
def app(runtime):
    runtime.__dict__["producer"] = RecordingProducer()
    with runtime.database.transaction() as session:
        add_user(session, "olive", "operator", PASSWORD)
        add_user(session, "victor", "viewer", PASSWORD)
    return create_app(runtime)


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def logged_in(app, name: str) -> TestClient:
    client = TestClient(app, follow_redirects=False)
    token = csrf_of(client.get("/login").text)
    reply = client.post("/login", data={"name": name, "password": PASSWORD, "csrf_token": token, "next": "/console/"})
    assert reply.status_code == 303, reply.text
    return client


@pytest.fixture
def operator(app):
    with logged_in(app, "olive") as client:
        yield client


@pytest.fixture
def viewer(app):
    with logged_in(app, "victor") as client:
        yield client


def admin_commands(runtime) -> list[Event]:
    topic = topic_name(runtime.settings.namespace, Topic.ADMIN_COMMANDS)
    with runtime.database.transaction() as session:
        return [Event.from_bytes(e.payload) for e in session.scalars(
            select(OutboxEntry).where(OutboxEntry.topic == topic).order_by(OutboxEntry.id))]


def audit_rows(runtime) -> list[tuple[str, str, str, str | None]]:
    with runtime.database.transaction() as session:
        return [(a.user, a.action, a.target, a.reason) for a in session.scalars(select(models.AuditEntry))]


def test_pages_send_a_stranger_to_the_login_page_and_back_after_logging_in(app):
    client = TestClient(app, follow_redirects=False)
    reply = client.get("/console/files?kind=cdr")
    assert reply.status_code == 303
    assert reply.headers["location"] == "/login?next=%2Fconsole%2Ffiles%3Fkind%3Dcdr"
    page = client.get(reply.headers["location"])
    assert page.status_code == 200 and '<label for="password">Password</label>' in page.text
    wrong = client.post("/login", data={"name": "olive", "password": "guess", "csrf_token": csrf_of(page.text),
                                        "next": "/console/files?kind=cdr"})
    assert wrong.status_code == 401 and "Wrong name or password" in wrong.text
    right = client.post("/login", data={"name": "olive", "password": PASSWORD, "csrf_token": csrf_of(page.text),
                                        "next": "/console/files?kind=cdr"})
    assert (right.status_code, right.headers["location"]) == (303, "/console/files?kind=cdr")
    assert client.get("/").headers["location"] == "/console/"


def test_login_refuses_a_form_without_its_csrf_token_and_never_redirects_off_site(app):
    client = TestClient(app, follow_redirects=False)
    client.get("/login")
    refused = client.post("/login", data={"name": "olive", "password": PASSWORD})
    assert refused.status_code == 403 and "CSRF token missing" in refused.json()["error"]
    token = csrf_of(client.get("/login").text)
    reply = client.post("/login", data={"name": "olive", "password": PASSWORD, "csrf_token": token,
                                        "next": "//evil.example/"})
    assert reply.headers["location"] == "/console/"


def test_logout_ends_the_session(operator):
    token = csrf_of(operator.get("/console/").text)
    assert operator.post("/logout", data={"csrf_token": token}).headers["location"] == "/login"
    assert operator.get("/console/").status_code == 303


def test_dashboard_shows_the_pipeline_at_a_glance_with_links(runtime, operator):
    through_pipeline(runtime, "gamma-cdr-20261001.csv", "gamma")
    arrive(runtime)  # the same file again: held
    page = operator.get("/console/")
    assert page.status_code == 200
    text = page.text
    assert "Signed in as <strong>olive</strong> (operator)" in text
    for label, href in (("Files", "/console/files"), ("Upload", "/console/upload"), ("Customers", "/console/customers"),
                        ("Reconciliation", "/console/recon"), ("Billing", "/console/billing"),
                        ("Invoices", "/console/invoices"), ("Dead letters", "/console/dead-letters")):
        assert f'<a href="{href}"' in text and f">{label}</a>" in text
    held = re.search(r'id="held-h".*?<p class="figure">(\d+)</p>', text, re.S).group(1)
    assert held == "1"
    assert '<a href="/console/files?status=held">Potential Duplicate</a>' in text  # today's files by status
    # the gamma sample's rated calls for ACME: 0.0313 + 0.0400 + 0.1600 (+ the rest of the file), unbilled
    assert re.search(r'id="unbilled-h".*?<p class="figure">GBP \d+\.\d\d</p>', text, re.S)
    assert '<a href="/console/customers/ACME">ACME</a>' in text  # its next billing run


def test_files_page_filters_and_counts_and_names_a_held_duplicate_potential_duplicate(runtime, operator):
    through_pipeline(runtime, "gamma-cdr-20261001.csv", "gamma")
    through_pipeline(runtime, "btw-cdr-20261002.csv", "btw")
    held = arrive(runtime)
    every = operator.get("/console/files").text
    assert "<strong>3</strong> files" in every and "Potential Duplicate: <strong>1</strong>" in every
    assert f'href="/console/files/{held.subject}"' in every
    btw = operator.get("/console/files", params={"carrier": "btw"}).text
    assert "btw-cdr-20261002.csv" in btw and "gamma-cdr-20261001.csv" not in btw
    assert "<strong>1</strong> files" in btw
    duplicates = operator.get("/console/files", params={"status": "potential duplicate"}).text
    assert "<strong>1</strong> files" in duplicates and "Potential Duplicate</span>" in duplicates
    assert "<strong>0</strong> files" in operator.get("/console/files", params={"kind": "sdr"}).text
    assert "<strong>0</strong> files" in operator.get("/console/files", params={"month": "2026-09"}).text
    bad = operator.get("/console/files", params={"status": "lost"})
    assert bad.status_code == 422 and "no file status &#39;lost&#39;" in bad.text


def test_a_held_files_potential_duplicates_tab_compares_it_side_by_side(runtime, operator):
    original = through_pipeline(runtime, "gamma-cdr-20261001.csv", "gamma")
    held = arrive(runtime, name="gamma-again.csv")
    page = operator.get(f"/console/files/{held.subject}", params={"tab": "duplicates"}).text
    assert '<a href="?tab=duplicates" aria-current="page">Potential Duplicates (1)</a>' in page
    assert f'compared with <a href="/console/files/{original.subject}">gamma-cdr-20261001.csv</a>' in page
    assert "<td>gamma-again.csv</td><td>gamma-cdr-20261001.csv</td>" in page
    assert "<td colspan=\"2\">Identical</td>" in page
    assert f'action="/console/files/{held.subject}/release"' in page
    assert f'action="/console/files/{held.subject}/discard"' in page
    calls = operator.get(f"/console/files/{original.subject}", params={"tab": "calls"}).text
    assert '<a href="/console/customers/ACME">ACME</a>' in calls and "<th scope=\"col\">Dialled</th>" in calls


def test_release_from_the_page_sends_the_apis_admin_command_with_the_user_and_audits_it(runtime, operator):
    through_pipeline(runtime, "gamma-cdr-20261001.csv", "gamma")
    held = arrive(runtime)
    token = csrf_of(operator.get(f"/console/files/{held.subject}?tab=duplicates").text)
    reply = operator.post(f"/console/files/{held.subject}/release",
                          data={"csrf_token": token, "reason": "carrier resent a corrected day", "tab": "duplicates"})
    assert (reply.status_code, reply.headers["location"]) == (303, f"/console/files/{held.subject}?tab=duplicates")
    [sent] = admin_commands(runtime)
    assert sent.type == EventType.ADMIN_COMMAND and sent.subject == held.subject
    assert sent.data == {"command": "release", "file_id": held.subject, "operator": "olive",
                         "reason": "carrier resent a corrected day"}
    assert ("olive", "file.release", held.subject, "carrier resent a corrected day") in audit_rows(runtime)
    assert "Release sent: file" in operator.get(reply.headers["location"]).text


def test_discard_without_a_reason_and_retry_of_a_rated_file_are_refused_and_send_nothing(runtime, operator):
    rated = through_pipeline(runtime, "gamma-cdr-20261001.csv", "gamma")
    held = arrive(runtime)
    token = csrf_of(operator.get("/console/").text)
    reply = operator.post(f"/console/files/{held.subject}/discard", data={"csrf_token": token, "reason": " "})
    assert "Discard needs a reason" in operator.get(reply.headers["location"]).text
    reply = operator.post(f"/console/files/{rated.subject}/retry", data={"csrf_token": token})
    page = operator.get(reply.headers["location"]).text
    assert "Retry refused:" in page and "only a failed or stuck file" in page
    assert admin_commands(runtime) == [] and not [a for a in audit_rows(runtime) if a[1].startswith("file.")]


def test_a_form_without_its_csrf_token_is_refused(runtime, operator):
    through_pipeline(runtime, "gamma-cdr-20261001.csv", "gamma")
    held = arrive(runtime)
    missing = operator.post(f"/console/files/{held.subject}/release", data={"reason": "fine"})
    assert missing.status_code == 403 and "CSRF token missing" in missing.json()["error"]
    wrong = operator.post(f"/console/files/{held.subject}/release", data={"reason": "fine", "csrf_token": "x" * 43})
    assert wrong.status_code == 403 and "CSRF token wrong" in wrong.json()["error"]
    assert admin_commands(runtime) == []


def test_a_viewer_reads_the_pages_but_release_and_replay_are_refused(runtime, viewer):
    through_pipeline(runtime, "gamma-cdr-20261001.csv", "gamma")
    held = arrive(runtime)
    page = viewer.get(f"/console/files/{held.subject}?tab=duplicates")
    assert page.status_code == 200 and "(viewer)" in page.text
    refused = viewer.post(f"/console/files/{held.subject}/release",
                          data={"csrf_token": csrf_of(page.text), "reason": "looks fine"})
    assert refused.status_code == 403 and "victor is a viewer" in refused.text
    replay = viewer.post("/console/dead-letters/1/replay", data={"csrf_token": csrf_of(page.text)})
    assert replay.status_code == 403
    assert admin_commands(runtime) == []


def test_dead_letters_are_listed_with_why_and_replayed_once_from_the_page(runtime, operator):
    event = Event(type=EventType.FILE_ACCEPTED, source="cdrflow/dedupe", subject="f-1", data={"file_id": "f-1"})
    with runtime.database.transaction() as session:
        letter = DeadLetter(service="parser", topic=topic_name(runtime.settings.namespace, Topic.FILE_ACCEPTED),
                            partition=0, offset=7, key="f-1", event_id=event.id, event_type=event.type,
                            file_id=None, error_type="UnknownFileError", error="file-accepted names unknown file",
                            payload=event.to_bytes(), failed_at=datetime(2026, 10, 2, 9, 30, tzinfo=UTC))
        session.add(letter)
        session.flush()
        letter_id = letter.id
    page = operator.get("/console/dead-letters").text
    assert "UnknownFileError: file-accepted names unknown file" in page
    assert f'action="/console/dead-letters/{letter_id}/replay"' in page
    shown = operator.get("/console/dead-letters", params={"show": letter_id}).text
    assert f"Dead letter {letter_id}</h2>" in shown and event.id in shown
    token = csrf_of(page)
    first = operator.post(f"/console/dead-letters/{letter_id}/replay", data={"csrf_token": token, "reason": "fixed"})
    assert "replayed to" in operator.get(first.headers["location"]).text
    operator.post(f"/console/dead-letters/{letter_id}/replay", data={"csrf_token": token})
    again = operator.get("/console/dead-letters").text
    assert "Replay refused:" in again and "Replayed by olive" in again
    with runtime.database.transaction() as session:
        assert session.get(DeadLetter, letter_id).replayed_by == "olive"
    assert ("olive", "dead-letter.replay", str(letter_id), "fixed") in audit_rows(runtime)


def test_upload_page_asks_for_carrier_kind_period_and_direction_and_guesses_none(operator):
    page = operator.get("/console/upload").text
    assert '<option value="gamma">gamma</option>' in page and '<option value="">Choose a carrier</option>' in page
    for field in ("kind", "period", "direction"):
        assert f'name="{field}"' in page
    assert " checked" not in page
    assert '<progress id="u-progress"' in page and '/console/static/upload.js' in page
    assert re.search(r'data-csrf="[^"]+"', page)


def test_static_assets_are_served_without_a_login(app):
    client = TestClient(app)
    css = client.get("/console/static/console.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    js = client.get("/console/static/upload.js")
    assert js.status_code == 200 and "X-CSRF-Token" in js.text and "upload.onprogress" in js.text


def test_an_unknown_file_is_a_404_page_not_an_error(operator):
    page = operator.get("/console/files/no-such-file")
    assert page.status_code == 404 and "no file no-such-file" in page.text and "<h1>No such file</h1>" in page.text


def test_a_rated_file_offers_reverse_and_a_failed_file_retry_each_sent_as_the_apis_command(runtime, operator):
    rated = through_pipeline(runtime, "gamma-cdr-20261001.csv", "gamma")
    page = operator.get(f"/console/files/{rated.subject}").text
    assert f'action="/console/files/{rated.subject}/reverse"' in page and "/retry" not in page
    token = csrf_of(page)
    operator.post(f"/console/files/{rated.subject}/reverse", data={"csrf_token": token})
    assert "Reverse needs a reason" in operator.get(f"/console/files/{rated.subject}").text
    operator.post(f"/console/files/{rated.subject}/reverse", data={"csrf_token": token, "reason": "wrong carrier"})
    failed = through_pipeline(runtime, "btw-cdr-20261002.csv", "btw")
    with runtime.database.transaction() as session:
        session.get(models.File, failed.subject).status = "failed"
    page = operator.get(f"/console/files/{failed.subject}").text
    assert f'action="/console/files/{failed.subject}/retry"' in page
    assert "Reverse: not possible: file" in page and "only a processed (rated) file is reversed" in page
    operator.post(f"/console/files/{failed.subject}/retry", data={"csrf_token": token})
    assert [(e.data["command"], e.data["file_id"], e.data["reason"]) for e in admin_commands(runtime)] == [
        ("reverse", rated.subject, "wrong carrier"), ("retry", failed.subject, "")]


def test_an_unknown_dead_letter_is_a_404_page(operator):
    page = operator.get("/console/dead-letters", params={"show": "999"})
    assert page.status_code == 404 and "no dead letter 999" in page.text
