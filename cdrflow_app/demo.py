"""The main job on embedded defaults: a fresh local broker and SQLite, every service as its
own process, the sample carrier files uploaded, October billed, and the results printed."""

from __future__ import annotations

import csv
import shutil
import smtplib
import socket
import time
from collections.abc import Callable
from pathlib import Path
from decimal import Decimal
from email.message import EmailMessage

import click

import cdrflow
from cdrflow.client import AdminApiError, AdminClient
from cdrflow.localkafka import free_port
from cdrflow_app.orchestrate import PIPELINE_SERVICES, infrastructure, pipeline
from cdrflow.filestore import FileStore
from cdrflow.reference import load_carriers
from services.rater.reference import load_customers, load_rate_sheet, load_tariffs
from cdrflow.db import Database
from cdrflow.errors import InfrastructureError
from cdrflow.settings import Settings

SAMPLES = Path(cdrflow.__file__).parent / "samples"
DEMO_PERIOD = "2026-10"
TERMINAL = {"held", "rated", "failed", "discarded"}


SAMPLE_SHEETS = (  # file, kind, owner, direction
    ("rates-business.csv", "retail", "business", "outbound"),
    ("rates-business-inbound.csv", "retail", "business", "inbound"),
    ("wholesale-gamma.csv", "wholesale", "gamma", "outbound"),
)


def load_sample_reference(session, store: FileStore) -> None:  # type: ignore[no-untyped-def]
    """Carriers, the 'business' tariff with its rate sheets, and customers, from samples/."""
    load_carriers(session, SAMPLES / "carriers.csv")
    load_tariffs(session, SAMPLES / "tariffs.csv")
    session.flush()
    for name, kind, owner, direction in SAMPLE_SHEETS:
        load_rate_sheet(session, store, (SAMPLES / name).read_bytes(), source_name=name, kind=kind, owner=owner,
                        direction=direction)
    load_customers(session, SAMPLES / "customers.csv")


def wait_until(what: str, check: Callable[[], bool], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise InfrastructureError(f"demo timed out after {timeout}s waiting for {what}")


DEMO_SERVICES = tuple(s for s in PIPELINE_SERVICES if s != "scheduler")
"""The demo closes October's runs itself once every sample file is in, as an operator would with
``cdrflow bill``; the scheduler would close them on its own the moment it starts (October ended
long ago), before the later files are in."""


def run_demo(base: Settings) -> None:
    demo_dir = (base.data_dir / "demo").resolve()
    shutil.rmtree(demo_dir, ignore_errors=True)
    demo_dir.mkdir(parents=True)
    settings = base.model_copy(update={
        "data_dir": demo_dir, "database_url": None, "kafka_bootstrap": None,
        "kafka_port": free_port(), "admin_port": free_port(), "mailgate_port": free_port(),
    })
    say = click.echo
    say(f"cdrflow demo: data in {demo_dir}")
    say("starting the Kafka broker (the first run fetches it from Maven Central)...")
    with infrastructure(settings):
        database = Database(settings.effective_database_url)
        with database.transaction() as session:
            load_sample_reference(session, FileStore(settings.file_store_dir))
        say(f"broker at {settings.bootstrap}, database migrated, sample carriers and customers loaded")
        with pipeline(settings, log_dir=str(demo_dir), services=DEMO_SERVICES):
            say(f"services running ({', '.join(DEMO_SERVICES)}; admin API at {settings.admin_url})")
            client = AdminClient.for_settings(settings)
            with (SAMPLES / "manifest.csv").open(newline="") as fh:
                manifest = list(csv.DictReader(fh))
            for entry in manifest:
                # One at a time, so "which file came first" is the manifest's order.
                if entry["via"] == "mail":
                    wait_until("the mail gateway", lambda: listening(settings.mailgate_host, settings.mailgate_port))
                    address = mail_sample(settings, entry)
                    say(f"  mailed {entry['file']} to {address} (with a signature logo)")
                    wait_until(f"{entry['file']} to arrive by mail", lambda n=entry["file"]: file_named(client, n))
                    file_id = file_named(client, entry["file"])
                else:
                    file_id = client.upload(SAMPLES / entry["file"], carrier=entry["carrier"], kind=entry["kind"],
                                            period=entry["period"], direction=entry["direction"])["file_id"]
                    say(f"  uploaded {entry['file']} -> file {file_id}")
                wait_until(f"{entry['file']} to be processed", lambda fid=file_id: file_done(client, fid))
            print_files(client)
            customers = sorted({row["customer"] for row in csv.DictReader((SAMPLES / "customers.csv").open())})
            for customer in customers:
                client.close_run(customer, DEMO_PERIOD)
            wait_until("invoices", lambda: len(client.invoices()) == len(customers))
            print_invoices(client)
            print_reconciliation(client)
        database.dispose()
    say("done: services and broker stopped.")


LOGO = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                     "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")
"""A 1×1 PNG: the kind of signature graphic carriers' mails carry, which must never become a file."""


def mail_sample(settings: Settings, entry: dict[str, str]) -> str:
    """Send a sample file to the mail gateway as a carrier would: an attachment, plus a logo."""
    address = f"{entry['carrier']}.{entry['period']}@{settings.mail_domain}"
    message = EmailMessage()
    message["From"], message["To"] = f"billing@{entry['carrier']}.example", address
    message["Subject"] = f"CDR file {entry['file']}"
    message.set_content("Please find today's CDRs attached.\n-- \nCarrier Billing Team")
    message.add_related(LOGO, maintype="image", subtype="png", cid="<logo@carrier>", filename="logo.png")
    message.add_attachment((SAMPLES / entry["file"]).read_bytes(), maintype="text", subtype="csv",
                           filename=entry["file"])
    with smtplib.SMTP(settings.mailgate_host, settings.mailgate_port, timeout=30) as smtp:
        smtp.send_message(message)
    return address


def listening(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def file_named(client: AdminClient, name: str) -> str | None:
    return next((f["file_id"] for f in client.files() if f["original_name"] == name), None)


def file_done(client: AdminClient, file_id: str) -> bool:
    """True once the file reached a state where the pipeline is done with it for now."""
    try:
        return client.file(file_id)["status"] in TERMINAL
    except AdminApiError:
        return False  # not recorded by dedupe yet


def print_files(client: AdminClient) -> None:
    files = client.files()
    click.echo("\nFiles")
    click.echo(f"  {'name':34} {'carrier':8} {'status':8} {'rows':>4} {'rej':>3} {'calls':>5}  note")
    names = {f["file_id"]: f["original_name"] for f in files}
    for f in files:
        note = f["status_reason"] or ""
        if f["status"] == "held":
            candidates = client.file(f["file_id"])["candidates"]
            note = "Potential Duplicate of " + ", ".join(names.get(c["file_id"], c["file_id"]) for c in candidates)
        click.echo(f"  {f['original_name']:34} {f['carrier']:8} {f['status']:8} {f['rows'] or 0:>4} "
                   f"{f['rejected'] or 0:>3} {f['calls'] or 0:>5}  {note}")


def print_invoices(client: AdminClient) -> None:
    click.echo(f"\nInvoices for {DEMO_PERIOD}")
    for inv in client.invoices():
        click.echo(f"  {inv['invoice_number']}  {inv['customer']:10} total £{inv['total']}")
        for charge in inv["charges"]:
            click.echo(f"      {charge['description']:14} x{charge['quantity']:<4} £{charge['amount']}")


def print_reconciliation(client: AdminClient) -> None:
    groups = client.recon()
    click.echo(f"\nReconciliation: {sum(g['calls'] for g in groups)} call(s) not billed until the reference data is fixed")
    for g in groups:
        click.echo(f"  {g['status']:9} {g['key']:24} {g['carrier']:8} x{g['calls']:<4} cost £{Decimal(g['cost']):.4f}  {g['reason']}")
