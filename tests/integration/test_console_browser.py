"""The operator console end to end in a real browser: Debian's Chromium (``/usr/bin/chromium``,
installed by ``scripts/browser-deps.sh``; Playwright never downloads one) driven by Playwright
against every pipeline service as its own process on the real broker and PostgreSQL.

The acceptance path of issue 13, as an operator clicks it: log in; upload a file; upload it
again and see it held as a Potential Duplicate; open its Potential Duplicates tab; release it;
see its calls on the customer's page with the unbilled total; assign an unmatched CLI from
reconciliation and see its calls re-rated; close a billing run; download the invoice PDF; and
a viewer's Release is refused. Every main page is screenshotted (the folder is printed) and
checked with axe-core: no violation of impact serious or critical on any page.

The whole test is bounded by ``BUDGET_S``: every wait draws on one deadline.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, expect, sync_playwright

from cdrflow_app.demo import SAMPLES
from services.admin.accounts import add_user

CHROMIUM = "/usr/bin/chromium"
BUDGET_S = 180
"""Seconds for the whole browser test (the stack is started before the clock starts)."""
PASSWORD = "console test password 1"
SAMPLE = SAMPLES / "gamma-cdr-20261001.csv"
UNMATCHED_CLI = "441999000000"
"""The sample's call from a CLI no customer has (normalised, as pages show CLIs): it waits in reconciliation."""
BLOCKING = ("serious", "critical")


class Clock:
    """One deadline for every wait in the test, so the test as a whole is bounded."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left_ms(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"the browser test ran past its {BUDGET_S}s budget")
        return left * 1000


@pytest.fixture
def settings(settings):  # type: ignore[no-untyped-def]
    """The integration settings, with the seller an invoice must name to be rendered as a PDF."""
    return settings.model_copy(update={"seller_name": "Northwind Telecom Ltd",
                                       "seller_address": "1 High Street|Leeds LS1 1AA"})


@pytest.fixture
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/browser-deps.sh (installs Debian's chromium)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.getbasetemp() / "screenshots"
    folder.mkdir(exist_ok=True)
    print(f"\nconsole screenshots: {folder}")
    return folder


@pytest.fixture
def users(database) -> dict[str, str]:  # type: ignore[no-untyped-def]
    with database.transaction() as session:
        add_user(session, "olive", "operator", PASSWORD)
        add_user(session, "victor", "viewer", PASSWORD)
    return {"operator": "olive", "viewer": "victor"}


class Console:
    """The console as one user sees it in one browser context: pages visited are screenshotted
    once each (by name) and checked with axe; violations are gathered for the end of the test."""

    def __init__(self, browser: Browser, base: str, clock: Clock, shots: Path, violations: dict[str, list]) -> None:
        self.context = browser.new_context(base_url=base, viewport={"width": 1366, "height": 900},
                                           accept_downloads=True)
        self.page = self.context.new_page()
        self.page.set_default_timeout(15_000)
        self.clock, self.shots, self.violations = clock, shots, violations

    def check(self, name: str) -> None:
        """Screenshot this page and run axe on it (each name once)."""
        if name in self.violations:
            return
        self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)
        results = Axe().run(self.page)
        self.violations[name] = [f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
                                 for v in results.response["violations"] if v.get("impact") in BLOCKING]
        if self.violations[name]:
            print(f"axe on {name}: {self.violations[name]}")

    def open(self, path: str, name: str | None = None) -> Page:
        self.page.goto(path, timeout=min(15_000, self.clock.left_ms()))
        if name:
            self.check(name)
        return self.page

    def log_in(self, user: str) -> None:
        self.open("/console/")
        expect(self.page).to_have_url(re.compile(r"/login\?next="))
        self.check("login")
        self.page.get_by_label("Name").fill(user)
        self.page.get_by_label("Password").fill(PASSWORD)
        self.page.get_by_role("button", name="Log in").click()
        expect(self.page.get_by_role("heading", level=1)).to_have_text("Dashboard")

    def reload_until(self, what: str, ready: Callable[[Page], bool], every_s: float = 0.5) -> None:
        while not ready(self.page):
            self.clock.left_ms()  # raises once the budget is spent
            time.sleep(every_s)
            self.page.reload()
        assert ready(self.page), what

    def status_is(self, label: str) -> Callable[[Page], bool]:
        return lambda page: page.locator("p.lead .badge").first.inner_text().strip() == label

    def upload(self, sample: Path) -> str:
        """Upload through the Upload page; returns the file id the page links to."""
        page = self.open("/console/upload", "upload")
        page.get_by_label("Carrier").select_option("gamma")
        page.get_by_label("CDR (calls)").check()
        page.get_by_label("Daily").check()
        page.get_by_label("Outbound").check()
        page.get_by_label("File").set_input_files(str(sample))
        page.get_by_role("button", name="Upload").click()
        expect(page.locator("#u-result")).to_contain_text("Uploaded:", timeout=min(30_000, self.clock.left_ms()))
        expect(page.locator("#u-progress")).to_have_attribute("value", "100")
        link = page.get_by_role("link", name="Open the file")
        file_id = link.get_attribute("href").rsplit("/", 1)[1]
        link.click()
        return file_id


def test_an_operator_handles_a_duplicate_bills_a_customer_and_a_viewer_cannot_release(
        settings, running, users, browser, screenshots):
    clock = Clock(BUDGET_S)
    violations: dict[str, list] = {}
    console = Console(browser, settings.admin_url, clock, screenshots, violations)
    page = console.page
    console.log_in(users["operator"])
    console.check("dashboard")

    # upload a file, and see it through the pipeline
    first = console.upload(SAMPLE)
    console.reload_until("first upload rated", console.status_is("Rated"))
    console.check("file")

    # upload it again: held as a Potential Duplicate of the first
    copy = console.upload(SAMPLE)
    console.reload_until("the copy held", console.status_is("Potential Duplicate"))
    console.open("/console/files?status=held", "files")
    expect(page.get_by_role("link", name=SAMPLE.name)).to_have_attribute("href", f"/console/files/{copy}")
    expect(page.locator(".counts")).to_contain_text("Potential Duplicate: 1")

    # a viewer sees the held copy's Release button, and is refused
    viewer = Console(browser, settings.admin_url, clock, screenshots, violations)
    viewer.log_in(users["viewer"])
    viewer.open(f"/console/files/{copy}?tab=duplicates")
    viewer.page.get_by_label("Reason to release").fill("looks fine to me")
    with viewer.page.expect_response(re.compile(f"/console/files/{copy}/release$")) as refused:
        viewer.page.get_by_role("button", name="Release").click()
    assert refused.value.status == 403
    expect(viewer.page.locator("body")).to_contain_text("victor is a viewer")
    viewer.context.close()

    # its Potential Duplicates tab: compared side by side with the first; release it
    console.open(f"/console/files/{copy}")
    expect(page.locator("p.lead .badge").first).to_have_text("Potential Duplicate")  # the viewer changed nothing
    tabs = page.get_by_role("navigation", name="File sections")
    tabs.get_by_role("link", name=re.compile(r"^Potential Duplicates")).click()
    expect(page.locator("table.compare caption")).to_contain_text("compared with")
    expect(page.locator("table.compare caption a")).to_have_attribute("href", f"/console/files/{first}")
    expect(page.get_by_role("row", name=re.compile("^Content"))).to_contain_text("Identical")
    console.check("file-duplicates")
    page.get_by_label("Reason to release").fill("carrier confirmed a second batch")
    page.get_by_role("button", name="Release").click()
    expect(page.locator(".flash")).to_contain_text("Release sent")
    tabs.get_by_role("link", name="Details").click()
    console.reload_until("the released copy rated", console.status_is("Rated"))

    # the customer's page: the unbilled total first, then its calls
    console.open("/console/customers/ACME", "customer")
    expect(page.get_by_role("heading", name="Unbilled total")).to_be_visible()
    # the sample's 4 ACME calls, 0.0313 + 0.04 + 0.16 + 0.0003 = 0.2316, the copy's set aside as overlaps
    expect(page.get_by_role("row", name=re.compile("^Unbilled total"))).to_contain_text("0.23")
    expect(page.get_by_role("cell", name="441632960001").first).to_be_visible()
    expect(page.get_by_role("cell", name=UNMATCHED_CLI)).to_have_count(0)

    # the other main pages, each screenshotted and checked
    for path, name in (("/console/files", "files-all"),
                       ("/console/dead-letters", "dead-letters"), ("/console/carriers", "carriers"),
                       ("/console/customers", "customers"), ("/console/tariffs", "tariffs")):
        console.open(path, name)
        expect(page.get_by_role("heading", level=1)).to_have_count(1)

    # reconciliation: assign the unmatched CLI to ACME; its call is re-rated onto ACME's page
    console.open("/console/recon", "recon")
    row = page.get_by_role("row", name=re.compile(re.escape(UNMATCHED_CLI)))
    row.get_by_label(re.compile("Customer")).select_option("ACME")
    row.get_by_role("button", name="Assign").click()
    expect(page.locator(".flash").first).to_contain_text(UNMATCHED_CLI)
    console.open("/console/customers/ACME")
    console.reload_until("the assigned CLI's call re-rated for ACME",
                         lambda p: p.get_by_role("cell", name=UNMATCHED_CLI).count() > 0)

    # close a billing run; its invoice is issued; download the PDF
    console.open("/console/billing", "billing")
    form = page.locator("form", has=page.get_by_role("button", name="Close run")).first
    form.get_by_label("Customer", exact=True).select_option("ACME")
    form.get_by_label(re.compile("^Period")).fill("2026-10")
    form.get_by_role("button", name="Close run").click()
    expect(page.locator(".flash").first).to_be_visible()
    expect(page.locator(".flash.error")).to_have_count(0)
    console.open("/console/invoices")
    console.reload_until("ACME's invoice issued", lambda p: p.get_by_role("link", name=re.compile(r"^INV-")).count() > 0)
    console.check("invoices")
    page.get_by_role("link", name=re.compile(r"^INV-")).first.click()
    console.check("invoice")
    href = page.get_by_role("link", name="Download PDF").get_attribute("href")
    pdf = console.context.request.get(href)
    assert pdf.status == 200 and pdf.body()[:5] == b"%PDF-", (pdf.status, pdf.body()[:80])
    with page.expect_download() as download:
        page.get_by_role("link", name="Download PDF").click()
    assert Path(download.value.path()).read_bytes()[:5] == b"%PDF-"
    console.open("/console/", "dashboard-after")

    serious = {name: found for name, found in violations.items() if found}
    assert serious == {}, f"accessibility violations (serious or critical) by page: {serious}"
    assert {"login", "dashboard", "files", "file", "file-duplicates", "upload", "customer", "recon", "billing",
            "invoices", "invoice", "dead-letters"} <= set(violations)
