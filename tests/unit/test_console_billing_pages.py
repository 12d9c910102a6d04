"""The console's reference-data, reconciliation and billing pages (services/admin/console_billing.py)
on the admin app: SQLite, the pipeline's handlers driven directly, the broker faked. Each page
shows what was put in; filters filter; every form goes through the API's own command path, and is
refused without its CSRF token or for a viewer."""

import html
import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

import services.admin.app
from cdrflow.bus import Topic, topic_name
from cdrflow.db import migrate, models
from cdrflow.db.models import BillingRun, Call, CustomerCli, InvoiceDelivery, OutboxEntry, RateSheetVersion, Source
from cdrflow_app.demo import load_sample_reference
from cdrflow.events import Event, EventType
from cdrflow.runtime import Runtime
from cdrflow.settings import Settings
from services.admin.accounts import add_user
from services.admin.app import create_app
from services.invoicer.service import Invoicer
from services.scheduler.charges import add_charge
from services.rater.service import Rater
from tests.authhelp import logged_in
from tests.unit.test_credit_notes import billed_october, close_run
from tests.unit.test_handlers import handle, through_pipeline
from tests.fakes import RecordingProducer

UNMATCHED_CLI = "441999000000"  # the gamma sample's one call from a CLI no customer has: 90 s, cost 0.0020


@pytest.fixture
def runtime(tmp_path):
    """The sample reference data (carriers gamma and btw, tariff business, ACME and BRISDENT) and a
    seller, so an invoice's PDF renders."""
    settings = Settings(data_dir=tmp_path, batch_size=3, seller_name="Northwind Voice Ltd",
                        seller_address="1 High Street|Leeds LS1 1AA")
    migrate(settings.effective_database_url)
    rt = Runtime(settings, "test")
    with rt.database.transaction() as session:
        load_sample_reference(session, rt.store)
    yield rt
    rt.database.dispose()


@pytest.fixture
def app(runtime, monkeypatch):
    monkeypatch.setattr(services.admin.app, "ANNOUNCE_WAIT_S", 0)  # no relay runs here: don't wait for it
    runtime.__dict__["producer"] = RecordingProducer()
    with runtime.database.transaction() as session:
        add_user(session, "olive", "operator", None)
        add_user(session, "victor", "viewer", None)
    return create_app(runtime)


class Browser:
    """A TestClient logged in as one user, with the session's CSRF token for its forms."""

    def __init__(self, app, runtime, name):
        self.client = TestClient(app, follow_redirects=False)
        self.csrf = logged_in(self.client, runtime, name)

    def get(self, url, **kwargs):
        return self.client.get(url, **kwargs)

    def post(self, url, data=None, files=None, csrf=True):
        form = dict(data or {}) | ({"csrf_token": self.csrf} if csrf else {})
        return self.client.post(url, data=form, files=files)

    def flashes(self, url):
        page = self.get(url).text
        return [(level, html.unescape(text)) for level, text in
                re.findall(r'<p class="flash (\w+)" role="\w+">(.*?)</p>', page, re.S)]


@pytest.fixture
def operator(app, runtime):
    return Browser(app, runtime, "olive")


@pytest.fixture
def viewer(app, runtime):
    return Browser(app, runtime, "victor")


def audit_rows(runtime):
    with runtime.database.transaction() as session:
        return [(a.user, a.action, a.target, a.reason) for a in session.scalars(
            select(models.AuditEntry).where(models.AuditEntry.user.in_(("olive", "victor")))
            .order_by(models.AuditEntry.id))]


def outbox(runtime, topic):
    name = topic_name(runtime.settings.namespace, topic)
    with runtime.database.transaction() as session:
        return [Event.from_bytes(e.payload) for e in session.scalars(
            select(OutboxEntry).where(OutboxEntry.topic == name).order_by(OutboxEntry.id))]


def section(page, heading_id):
    """The HTML of the <section> whose heading has ``heading_id``."""
    return re.search(rf'<section aria-labelledby="{heading_id}">(.*?)</section>', page, re.S).group(1)


def row_of(page, header):
    """The cells of the table row whose <th scope="row"> says ``header``."""
    found = re.search(rf'<th scope="row"[^>]*>(?:<a [^>]*>)?{re.escape(header)}(?:</a>)?</th>(.*?)</tr>', page, re.S)
    assert found, f"no row {header!r}"
    cells = re.findall(r"<td[^>]*>(.*?)</td>", found.group(1), re.S)
    return [html.unescape(re.sub(r"<[^>]+>", "", cell)).strip() for cell in cells]


# --- carriers ------------------------------------------------------------------------------------


def test_carrier_page_shows_formats_sources_with_their_last_poll_mail_addresses_and_rules(runtime, operator):
    now = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
    with runtime.database.transaction() as session:
        session.add(Source(name="gamma-sftp", carrier="gamma", protocol="sftp", host="sftp.gamma.example", port=22,
                           username="reseller", remote_dir="/cdrs", rules="[]", poll_interval=300,
                           delete_after_collect=False, verify_tls=True, enabled=True, state="failing", failures=3,
                           last_error="authentication failed: check the password", last_poll_at=now, collected=12))
        session.get(models.Carrier, "gamma").hold_same_name = True
    listed = operator.get("/console/carriers").text
    assert row_of(listed, "gamma")[:2] == ["Gamma Telecom", "generic-cdr"]
    assert "1 failing" in row_of(listed, "gamma")[2]

    page = operator.get("/console/carriers/gamma")
    assert page.status_code == 200 and page.text.count("<h1") == 1
    text = page.text
    assert row_of(text, "CDR")[:2] == ["generic-cdr", "the carrier's format"]
    assert row_of(text, "SDR")[0] == "none set"
    source = row_of(text, "gamma-sftp")
    assert source[0] == "sftp://reseller@sftp.gamma.example:22"
    assert source[3] == "2026-11-02 09:30"  # the last poll in the operator's zone (GMT in November)
    assert "Failing" in source[4] and "(3 in a row)" in source[4] and "authentication failed" in source[4]
    for address in ("gamma.cdrs@localhost", "gamma.daily@localhost", "gamma.monthly@localhost", "gamma.sdr@localhost"):
        assert f"<code>{address}</code>" in text
    rules = section(text, "rules-h")
    assert "is held, even with new content" in rules and "For billing: their fixed fees are billed" in rules
    assert operator.get("/console/carriers/nosuch").status_code == 404


def test_saving_a_carriers_rules_goes_through_the_rules_path_and_is_audited(runtime, operator):
    reply = operator.post("/console/carriers/btw/rules", {"hold_same_name": "on", "sdr": "information"})
    assert (reply.status_code, reply.headers["location"]) == (303, "/console/carriers/btw")
    with runtime.database.transaction() as session:
        btw = session.get(models.Carrier, "btw")
        assert (btw.hold_same_name, btw.sdr_for_billing) == (True, False)
        logged = session.scalars(select(models.ReferenceChange.detail).where(models.ReferenceChange.key == "btw")).all()
    assert "hold same name: on" in logged  # the rater and dedupe see it like any reference change
    assert audit_rows(runtime) == [("olive", "carrier.rules", "btw", None)]


# --- customers -----------------------------------------------------------------------------------


def test_customer_page_shows_the_unbilled_total_first_then_terms_clis_calls_charges_and_invoices(runtime, operator):
    billed_october(runtime)  # October's calls on INV-000001; the btw call of 1 November unbilled
    with runtime.database.transaction() as session:
        add_charge(session, customer="ACME", description="Line rental", amount="12.50", frequency="monthly",
                   start="2026-11-01", created_by="sam")
    listed = operator.get("/console/customers").text
    assert row_of(listed, "ACME")[:2] == ["Acme Widgets Ltd", "business"]

    page = operator.get("/console/customers/ACME")
    assert page.status_code == 200
    text = page.text
    assert text.index('id="unbilled-h"') < text.index('id="terms-h"') < text.index('id="calls-h"')
    # the same figures as the API's, with the currency: calls, charges, and their sum
    calls = operator.get("/customers/ACME/calls").json()["unbilled"]
    charges = operator.get("/customers/ACME/unbilled").json()
    assert calls["calls"] == 1 and Decimal(charges["total"]) >= Decimal("12.50")  # billed in advance
    unbilled = section(text, "unbilled-h")
    assert row_of(unbilled, f"Calls ({calls['calls']})") == [f"£{calls['charge']}"]
    assert row_of(unbilled, f"Charges and fixed fees ({len(charges['items'])})") == [f"£{charges['total']}"]
    assert row_of(unbilled, "Unbilled total") == [f"£{Decimal(calls['charge']) + Decimal(charges['total'])}"]
    assert row_of(text, "441632960001")[:2] == ["ddi", "any"]  # its CLIs
    assert row_of(section(text, "charges-h"), "Line rental")[:4] == ["£12.50", "1", "monthly", "2026-11-01"]
    assert row_of(section(text, "invoices-h"), "INV-000001")[-2:] == ["issued", "£0.38"]

    calls = section(text, "calls-h")
    assert "2026-10-01 09:15:00" in calls  # the CDR's local time, stored as 08:15 UTC, shown in the operator's zone
    assert "2026-10-03 12:00:00" in calls  # 12:00+01:00 on btw's CDR
    assert row_of(calls, "2026-10-01 09:15:00")[-3:] == ["£0.0313", "rated", "INV-000001"]  # exact, not rounded


def test_customer_calls_are_filtered_by_local_days_and_a_bad_day_is_refused_clearly(runtime, operator):
    through_pipeline(runtime, "gamma-cdr-20261001.csv", "gamma")
    through_pipeline(runtime, "btw-cdr-20261002.csv", "btw")
    page = operator.get("/console/customers/ACME", params={"from": "2026-10-03", "to": "2026-10-05"}).text
    calls = section(page, "calls-h")
    starts = re.findall(r'<th scope="row">(2026-\d\d-\d\d) ', calls)
    assert starts and set(starts) <= {"2026-10-03", "2026-10-04", "2026-10-05"}
    assert "2026-10-01" not in calls
    assert 'value="2026-10-03"' in calls  # the filter keeps what was asked
    bad = operator.get("/console/customers/ACME", params={"from": "2026-13-01"})
    assert bad.status_code == 422 and "'from' '2026-13-01' is not a day YYYY-MM-DD" in html.unescape(bad.text)
    assert operator.get("/console/customers/NOPE").status_code == 404


def test_a_cli_added_on_the_customer_page_is_stored_as_the_api_stores_it(runtime, operator):
    reply = operator.post("/console/customers/BRISDENT/clis", {"cli": "+44 117 946 0099"})
    assert reply.status_code == 303
    with runtime.database.transaction() as session:
        added = session.scalar(select(CustomerCli).where(CustomerCli.value == "441179460099"))
        assert (added.customer_code, added.kind) == ("BRISDENT", "ddi")
    [(level, text)] = operator.flashes("/console/customers/BRISDENT")
    assert level == "info" and "CLI 441179460099 (ddi) is now customer BRISDENT's" in text
    taken = operator.post("/console/customers/BRISDENT/clis", {"cli": "+441632960001"})  # ACME's DDI
    assert taken.status_code == 303
    [(level, text)] = operator.flashes("/console/customers/BRISDENT")
    assert level == "error" and "not added" in text


# --- tariffs and sheets ----------------------------------------------------------------------------


def test_tariffs_page_and_a_tariffs_page_list_its_rate_sheets_and_customers(operator):
    listed = operator.get("/console/tariffs").text
    assert row_of(listed, "business")[:2] == ["Business standard", "uk-default"]
    page = operator.get("/console/tariffs/business").text
    assert "rates-business.csv" in page and "rates-business-inbound.csv" in page
    assert '<a href="/console/customers/ACME">ACME</a>' in page
    assert operator.get("/console/tariffs/gold").status_code == 404


def test_a_bad_rate_sheet_is_refused_with_its_report_line_by_line_and_a_good_one_is_a_new_version(runtime, operator):
    form = {"kind": "retail", "owner": "business", "direction": "outbound"}
    bad = operator.post("/console/rate-sheets", form, files={"file": ("deck.csv", b"code,peak\n44,-1\n44,0.01\n")})
    assert bad.status_code == 422
    report = section(bad.text, "report-h")
    assert row_of(report, "2") == ["peak -1 is negative"]
    assert row_of(report, "3") == ["duplicate code 44 (first on line 2)"]
    with runtime.database.transaction() as session:
        assert session.scalar(select(func.max(RateSheetVersion.version)).where(
            RateSheetVersion.owner == "business", RateSheetVersion.direction == "outbound")) == 1  # unchanged

    good = operator.post("/console/rate-sheets", form,
                         files={"file": ("deck.csv", b"code,destination,peak\n44,UK,0.0125\n")})
    assert good.status_code == 303
    with runtime.database.transaction() as session:
        new = session.scalar(select(RateSheetVersion).where(RateSheetVersion.version == 2))
    assert good.headers["location"] == f"/console/rate-sheets/{new.id}"
    page = operator.get(good.headers["location"]).text
    assert row_of(page, "2")[:4] == ["44", "prefix", "UK", "0.0125"]  # line 2 of the file, exact
    versions = section(page, "versions-h")
    assert "v2" in versions and "v1" in versions and versions.index("Active") < versions.index("Older version")
    assert ("olive", "rate-sheet.load", "retail business v2", None) in audit_rows(runtime)


def test_a_peak_schedule_is_uploaded_checked_and_listed(operator):
    bad = operator.post("/console/schedules", {"name": "evenings"},
                        files={"file": ("s.csv", b"band,days,start,end\npeak,Mon-Fri,08:00,18:00\n")})
    assert bad.status_code == 422 and "nothing was loaded" in bad.text
    rules = (b"band,days,start,end\npeak,Mon-Fri,08:00,18:00\noffpeak,Mon-Fri,00:00,08:00\n"
             b"offpeak,Mon-Fri,18:00,24:00\nweekend,Sat-Sun,00:00,24:00\n")
    good = operator.post("/console/schedules", {"name": "evenings"}, files={"file": ("s.csv", rules)})
    assert good.status_code == 303
    page = operator.get("/console/schedules").text
    assert "peak,Mon-Fri,08:00,18:00" in row_of(page, "evenings")[0]


def test_a_fee_sheet_is_uploaded_shown_row_by_row_and_a_bad_one_reported(operator):
    bad = operator.post("/console/fee-sheets", {"tariff": "business"},
                        files={"file": ("fees.csv", b"reference,rule,price\nLINE,fixed,-3\n")})
    assert bad.status_code == 422 and row_of(section(bad.text, "report-h"), "2")
    good = operator.post("/console/fee-sheets", {"tariff": "business"},
                         files={"file": ("fees.csv", b"reference,rule,price\nLINE,fixed,12.50\n")})
    assert (good.status_code, good.headers["location"]) == (303, "/console/fee-sheets/business")
    page = operator.get("/console/fee-sheets/business").text
    assert row_of(page, "2")[1:6] == ["line", "any", "fixed", "12.50", ""]
    assert "business version 1" in operator.get("/console/fee-sheets").text


# --- reconciliation --------------------------------------------------------------------------------


def test_assigning_an_unmatched_cli_from_recon_adds_it_to_the_customer_and_its_calls_are_rerated(runtime, operator):
    through_pipeline(runtime, "gamma-cdr-20261001.csv", "gamma")
    rater = Rater(runtime)
    rater.rerate_reconciliation()  # what the rater does at this reference version: nothing to change yet
    page = operator.get("/console/recon").text
    unmatched = section(page, "unmatched-h")
    assert row_of(unmatched, UNMATCHED_CLI)[:4] == ["gamma", "1", "1.5", "0.002"]
    assert f'<label for="assign-1" class="visually-hidden">Customer for CLI {UNMATCHED_CLI}</label>' in unmatched
    assert ">Assign</button>" in unmatched

    reply = operator.post("/console/recon/assign", {"cli": UNMATCHED_CLI, "customer": "BRISDENT"})
    assert (reply.status_code, reply.headers["location"]) == (303, "/console/recon")
    with runtime.database.transaction() as session:
        assert session.scalar(select(CustomerCli.customer_code).where(CustomerCli.value == UNMATCHED_CLI)) == "BRISDENT"
    assert audit_rows(runtime) == [("olive", "cli.add", f"BRISDENT {UNMATCHED_CLI}", None)]

    # The rater sees the reference change and rates the call again, as after POST /customers/{code}/clis.
    runtime.producer.sent.clear()
    assert rater.rerate_reconciliation() == 1
    for _, _, event in runtime.producer.sent:
        handle(runtime, Invoicer(runtime).on_call_rated, event)
    assert "No unmatched CLIs." in operator.get("/console/recon").text
    calls = section(operator.get("/console/customers/BRISDENT").text, "calls-h")
    assert UNMATCHED_CLI in calls and "rated" in calls


def test_recon_lists_unrated_destinations(runtime, operator):
    through_pipeline(runtime, "gamma-cdr-20261001.csv", "gamma")
    with runtime.database.transaction() as session:
        session.execute(Call.__table__.update().where(Call.dialled.like("441174%"), Call.customer == "ACME")
                        .values(status="unrated", reason="no rate for 441174"))
    unrated = section(operator.get("/console/recon").text, "unrated-h")
    assert "business: 44117…" in unrated and "no rate for 441174" in unrated


# --- billing runs and invoices -----------------------------------------------------------------------


def test_close_run_closes_the_period_through_the_billing_run_path(runtime, operator):
    through_pipeline(runtime, "gamma-cdr-20261001.csv", "gamma")
    reply = operator.post("/console/billing/close", {"customer": "ACME", "period": "2026-10"})
    assert (reply.status_code, reply.headers["location"]) == (303, "/console/billing")
    [(level, text)] = operator.flashes("/console/billing")
    assert level == "info" and "Billing run closed: ACME 2026-10" in text
    with runtime.database.transaction() as session:
        [run] = session.scalars(select(BillingRun)).all()
        assert (run.customer, str(run.period_start), run.closed_by) == ("ACME", "2026-10-01", "olive")
    [event] = outbox(runtime, Topic.RUN_CLOSED)
    assert (event.type, event.data["customer"], event.data["period"]) == (EventType.RUN_CLOSED, "ACME", "2026-10")
    assert audit_rows(runtime) == [("olive", "billing-run.close", "ACME 2026-10", None)]
    assert row_of(operator.get("/console/billing").text, "ACME")[:3] == ["2026-10-01 to 2026-10-31",
                                                                          run.closed_at.astimezone(
                                                                              runtime.settings.zone).strftime(
                                                                              "%Y-%m-%d %H:%M"), "olive"]
    again = operator.post("/console/billing/close", {"customer": "ACME", "period": "2026-10"})
    assert again.status_code == 303 and "closed already by olive" in operator.flashes("/console/billing")[0][1]
    assert len(outbox(runtime, Topic.RUN_CLOSED)) == 1
    refused = operator.post("/console/billing/close", {"customer": "ACME", "period": "2099-01"})
    assert refused.status_code == 303
    [(level, text)] = operator.flashes("/console/billing")
    assert level == "error" and "has not ended" in text


def test_invoices_are_listed_filtered_and_shown_with_download_links(runtime, operator):
    billed_october(runtime)
    listed = operator.get("/console/invoices", params={"status": "issued"}).text
    assert row_of(listed, "INV-000001")[0] == "ACME"
    assert row_of(listed, "INV-000001")[-1] == "£0.38"
    assert "INV-000001" not in operator.get("/console/invoices", params={"status": "credited"}).text
    page = operator.get("/console/invoices/INV-000001").text
    assert row_of(page, "Call Charges")[-1] == "£0.32"
    assert row_of(page, "Total") == ["£0.38"]
    assert '<a href="/invoices/INV-000001/pdf" download>Download PDF</a>' in page
    assert '<a href="/invoices/INV-000001/calls.csv" download>Download CSV</a>' in page
    pdf = operator.get("/invoices/INV-000001/pdf")  # the link works with the console's session
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert operator.get("/console/invoices/INV-999999").status_code == 404


def test_resend_queues_a_new_delivery_as_the_send_endpoint_does(runtime, operator):
    billed_october(runtime)
    reply = operator.post("/console/invoices/INV-000001/send", {"to": "accounts@acme.example"})
    assert reply.status_code == 303
    with runtime.database.transaction() as session:
        [delivery] = session.scalars(select(InvoiceDelivery).where(InvoiceDelivery.requested_by == "olive")).all()
        assert (delivery.document_number, delivery.to_address, delivery.status) == (
            "INV-000001", "accounts@acme.example", "queued")
    assert ("olive", "invoice.send", "INV-000001", None) in audit_rows(runtime)
    assert "accounts@acme.example" in section(operator.get("/console/invoices/INV-000001").text, "deliveries-h")


def test_credit_needs_a_reason_and_sends_the_credit_command_to_the_invoicer(runtime, operator):
    billed_october(runtime)
    operator.post("/console/invoices/INV-000001/credit", {"reason": ""})
    [(level, text)] = operator.flashes("/console/invoices/INV-000001")
    assert level == "error" and "needs a reason" in text
    assert outbox(runtime, Topic.ADMIN_COMMANDS) == []

    assert operator.post("/console/invoices/INV-000001/credit", {"reason": "wrong rates"}).status_code == 303
    [command] = outbox(runtime, Topic.ADMIN_COMMANDS)
    assert command.data == {"command": "credit", "invoice_number": "INV-000001", "operator": "olive",
                            "reason": "wrong rates"}
    assert audit_rows(runtime) == [("olive", "invoice.credit", "INV-000001", "wrong rates")]
    handle(runtime, Invoicer(runtime).on_admin_command, command)  # the invoicer makes the credit note
    page = operator.get("/console/invoices/INV-000001").text
    assert "Credit note CN-000001" in page and 'action="/console/invoices/INV-000001/credit"' not in page
    operator.post("/console/invoices/INV-000001/credit", {"reason": "again"})
    [(level, text)] = operator.flashes("/console/invoices/INV-000001")
    assert level == "error" and "Credit refused" in text and "CN-000001" in text


# --- every form: CSRF token and role --------------------------------------------------------------

FORMS = [
    ("/console/carriers/gamma/rules", {"sdr": "information"}, None),
    ("/console/customers/ACME/clis", {"cli": "+441632960050"}, None),
    ("/console/rate-sheets", {"kind": "retail", "owner": "business", "direction": "outbound"},
     {"file": ("deck.csv", b"code,peak\n44,0.02\n")}),
    ("/console/schedules", {"name": "x"}, {"file": ("s.csv", b"band,days,start,end\n")}),
    ("/console/fee-sheets", {"tariff": "business"}, {"file": ("fees.csv", b"reference,rule,price\nX,fixed,1\n")}),
    ("/console/recon/assign", {"cli": UNMATCHED_CLI, "customer": "ACME"}, None),
    ("/console/billing/close", {"customer": "ACME", "period": "2026-10"}, None),
    ("/console/invoices/INV-000001/send", {"to": "a@b.example"}, None),
    ("/console/invoices/INV-000001/credit", {"reason": "wrong"}, None),
]


def changes(runtime):
    with runtime.database.transaction() as session:
        return [session.scalar(select(func.count()).select_from(table)) for table in (
            models.ReferenceChange, CustomerCli, BillingRun, InvoiceDelivery, OutboxEntry, models.AuditEntry)]


@pytest.mark.parametrize(("url", "data", "files"), FORMS, ids=[f[0] for f in FORMS])
def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(runtime, operator, url, data, files):
    billed_october(runtime)
    before = changes(runtime)
    reply = operator.post(url, data, files=files, csrf=False)
    assert reply.status_code == 403 and "CSRF token missing" in reply.text
    wrong = operator.client.post(url, data=data | {"csrf_token": "forged"}, files=files)
    assert wrong.status_code == 403 and "CSRF token wrong" in wrong.text
    assert changes(runtime) == before


@pytest.mark.parametrize(("url", "data", "files"), FORMS, ids=[f[0] for f in FORMS])
def test_a_viewers_form_is_refused_403_and_changes_nothing(runtime, viewer, url, data, files):
    billed_october(runtime)
    before = changes(runtime)
    reply = viewer.post(url, data, files=files)
    assert reply.status_code == 403 and "victor is a viewer" in reply.text
    assert changes(runtime) == before


def test_a_viewer_can_read_every_page(runtime, viewer):
    billed_october(runtime)
    close_run(runtime)
    with runtime.database.transaction() as session:
        sheet_id = session.scalar(select(func.min(RateSheetVersion.id)))
    for url in ("/console/carriers", "/console/carriers/gamma", "/console/customers", "/console/customers/ACME",
                "/console/tariffs", "/console/tariffs/business", "/console/rate-sheets",
                f"/console/rate-sheets/{sheet_id}",
                "/console/schedules", "/console/fee-sheets", "/console/recon", "/console/billing", "/console/invoices",
                "/console/invoices/INV-000001"):
        page = viewer.get(url)
        assert page.status_code == 200, url
        assert page.text.count("<h1") == 1, url
        assert re.search(r"<th(?! scope)[ >]", page.text) is None, url  # every header cell says what it heads


def test_pages_with_nothing_to_list_say_so(runtime, operator):
    with runtime.database.transaction() as session:
        session.add(models.Customer(code="NEW", name="New Ltd"))
    assert "No unmatched CLIs." in operator.get("/console/recon").text
    assert "No billing runs closed." in operator.get("/console/billing").text
    assert "No invoices match." in operator.get("/console/invoices").text
    assert "No fixed-fee sheets loaded." in operator.get("/console/fee-sheets").text
    new = operator.get("/console/customers/NEW").text
    assert "No CLIs: no call can match this customer yet." in new and "No calls in these days." in new
    assert row_of(section(new, "unbilled-h"), "Unbilled total") == ["£0.00"]
    assert "No collection sources" in operator.get("/console/carriers/btw").text


def test_every_form_on_every_page_carries_the_sessions_csrf_token(runtime, operator):
    billed_october(runtime)
    close_run(runtime)
    pages = ("/console/carriers/gamma", "/console/customers/ACME", "/console/rate-sheets", "/console/schedules",
             "/console/fee-sheets", "/console/recon", "/console/billing", "/console/invoices/INV-000001")
    for url in pages:
        page = operator.get(url).text
        forms = re.findall(r'<form[^>]*method="post"', page, re.I)
        tokens = re.findall(r'name="csrf_token" value="([^"]*)"', page)
        assert forms and len(tokens) >= len(forms), url  # a form without its token is refused (403)
        assert set(tokens) == {operator.csrf}, url
