"""Duplicate files on the real broker and PostgreSQL: copies held whatever their packing, two
copies at the same moment decided by the database, release parses the file as a new file."""

from __future__ import annotations

import gzip
import threading
from decimal import Decimal

from sqlalchemy import func, select

from cdrflow.client import AdminClient
from cdrflow.db.models import Call, FileDecision
from cdrflow_app.demo import SAMPLES
from cdrflow.events import EventType
from cdrflow.intake import FileMetadata, file_arrived
from cdrflow.runtime import Runtime
from services.dedupe import service as dedupe_service
from services.dedupe.service import Dedupe
from services.invoicer import ledger
from services.invoicer.service import Invoicer
from services.parser.service import Parser
from services.rater.service import Rater
from tests.integration.conftest import UNSCHEDULED, wait_until

CSV = (SAMPLES / "gamma-cdr-20261001.csv").read_bytes()


def status_of(client: AdminClient, file_id: str) -> str | None:
    return next((f["status"] for f in client.files() if f["file_id"] == file_id), None)


def test_two_copies_arriving_at_the_same_moment_in_two_processes_give_exactly_one_accepted(settings, monkeypatch):
    """Both handlers are held at the race window (fingerprint computed, nothing written yet) and
    let go together, each in its own PostgreSQL transaction: only the claim can tell them apart."""
    runtime = Runtime(settings, "dedupe")
    barrier = threading.Barrier(2, timeout=30)
    real = dedupe_service.content_fingerprint

    def at_the_same_moment(stream, name="file"):  # type: ignore[no-untyped-def]
        fingerprint = real(stream, name)
        barrier.wait()
        return fingerprint

    monkeypatch.setattr(dedupe_service, "content_fingerprint", at_the_same_moment)
    plain = runtime.store.put_bytes(CSV)
    zipped = runtime.store.put_bytes(gzip.compress(CSV))
    events = [file_arrived(plain, FileMetadata("gamma", "cdr", "daily", "outbound", "g.csv", "collector"), "c"),
              file_arrived(zipped, FileMetadata("gamma", "cdr", "daily", "outbound", "g.csv.gz", "mailgate"), "m")]
    decisions: list[str] = []
    errors: list[BaseException] = []

    def gateway(event) -> None:  # type: ignore[no-untyped-def]
        try:
            with runtime.database.transaction() as session:
                decisions.extend(o.event.type for o in Dedupe(runtime).on_file_arrived(event, session))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=gateway, args=(e,)) for e in events]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    runtime.database.dispose()
    assert errors == []
    assert sorted(decisions) == sorted([EventType.FILE_ACCEPTED, EventType.FILE_HELD])


def test_a_gzipped_copy_is_held_and_its_release_parses_it_as_a_new_file(settings, running, database, tmp_path):
    client = AdminClient.for_settings(settings)
    first = client.upload(SAMPLES / "gamma-cdr-20261001.csv", carrier="gamma", kind="cdr", period="daily",
                          direction="outbound")["file_id"]
    wait_until("original rated", lambda: status_of(client, first) == "rated")
    packed = tmp_path / "gamma-cdr-20261001.csv.gz"
    packed.write_bytes(gzip.compress(CSV))
    copy = client.upload(packed, carrier="gamma", kind="cdr", period="daily", direction="outbound")["file_id"]
    wait_until("copy held", lambda: status_of(client, copy) == "held")

    view = client.file(copy)
    assert [c["file_id"] for c in view["candidates"]] == [first]
    assert view["comparisons"][0]["identical_content"] is True
    assert view["fingerprint"] != client.file(first)["fingerprint"]

    client.file_command(copy, "release", reason="carrier confirmed a separate batch", operator="sam")
    wait_until("released copy rated", lambda: status_of(client, copy) == "rated")
    assert client.file_command(copy, "release", reason="again")["already"] is True
    with database.transaction() as session:
        decision = session.get(FileDecision, copy)
        assert (decision.operator, decision.reason) == ("sam", "carrier confirmed a separate batch")
        per_file = dict(session.execute(select(Call.file_id, func.count()).group_by(Call.file_id)).all())
        assert per_file == {first: 7, copy: 7}
    # Released, the copy is parsed as a new file, and every call of it overlaps the original's:
    # set aside, so ACME is billed its 4 gamma calls once.
    assert client.file(copy)["overlaps"] == "overlaps 7 call(s) of file(s) gamma-cdr-20261001.csv"
    client.close_run("ACME", "2026-10")
    [invoice] = wait_until("invoice", lambda: client.invoices())
    # 0.2316 → 0.23 once; 20% VAT: 0.046 → 0.05
    assert (invoice["charges"][0]["quantity"], Decimal(invoice["total"])) == (4, Decimal("0.28"))


def test_two_files_with_the_same_call_stored_at_the_same_moment_by_two_invoicers_bill_it_once(settings, monkeypatch):
    """Both invoicers are held after hashing usage keys, before claiming them, then let go
    together: the usage-key claim, not a query, decides which file's call is set aside."""
    runtime = Runtime(settings, "invoicer")
    rated = []
    for name, lines in (("a.csv", CSV), ("b.csv", CSV.replace(b"+441632960001,07700900123", b"+441632960001,07700900999"))):
        stored = runtime.store.put_bytes(lines)
        event = file_arrived(stored, FileMetadata("gamma", "cdr", "daily", "outbound", name, "upload"), "cdrflow/admin")
        with runtime.database.transaction() as session:
            [accepted] = [o.event for o in Dedupe(runtime).on_file_arrived(event, session)]
        with runtime.database.transaction() as session:
            parsed = [o.event for o in Parser(runtime).on_file_accepted(accepted, session)]
        batches = []
        for p in parsed:
            with runtime.database.transaction() as session:
                batches += [o.event for o in Rater(runtime).on_record_parsed(p, session)]
        rated.append(batches)
    barrier = threading.Barrier(2, timeout=30)
    local = threading.local()
    real = ledger.usage_hashes

    def at_the_same_moment(*args):  # type: ignore[no-untyped-def]
        if not getattr(local, "waited", False):
            local.waited = True
            barrier.wait()
        return real(*args)

    monkeypatch.setattr(ledger, "usage_hashes", at_the_same_moment)
    errors: list[BaseException] = []

    def invoicer(batches) -> None:  # type: ignore[no-untyped-def]
        try:
            for b in batches:
                with runtime.database.transaction() as session:
                    list(Invoicer(runtime).on_call_rated(b, session))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=invoicer, args=(b,)) for b in rated]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    with runtime.database.transaction() as session:
        stored = session.scalar(select(func.count()).select_from(Call))
        aside = session.scalar(select(func.count()).select_from(Call).where(Call.set_aside))
    runtime.database.dispose()
    assert (stored, aside) == (14, 6)  # 7 calls each; the 6 they share are billed from one file only


def test_a_monthly_file_overlapping_three_daily_files_bills_only_its_new_calls(settings, running, tmp_path):
    client = AdminClient.for_settings(settings)
    day = {d: [f"+441632960001,01174960123,2026-10-0{d}T10:00:00,60,0.0010",
               f"+441632960002,01174960555,2026-10-0{d}T11:00:00,120,0.0020"] for d in (1, 2, 3)}
    new = ["+441632960001,01174960123,2026-10-04T10:00:00,60,0.0010"]

    def upload(name: str, lines: list[str], period: str) -> str:
        path = tmp_path / name
        path.write_text("cli,dialled,start,duration,cost\n" + "".join(f"{line}\n" for line in lines))
        file_id = client.upload(path, carrier="gamma", kind="cdr", period=period, direction="outbound")["file_id"]
        wait_until(f"{name} rated", lambda: status_of(client, file_id) == "rated")
        return file_id

    for d in (1, 2, 3):
        upload(f"gamma-2026100{d}.csv", day[d], "daily")
    monthly = upload("gamma-202610.csv", day[1] + day[2] + day[3] + new, "monthly")
    view = client.file(monthly)
    assert (view["calls"], view["overlapping_calls"], view["overlap_policy"]) == (7, 6, "skip")
    assert view["overlaps"] == ("overlaps 6 call(s) of file(s) gamma-20261001.csv, gamma-20261002.csv, "
                                "gamma-20261003.csv")
    assert [f["file_id"] for f in client.files(carrier="gamma", period="monthly", month="2026-10")] == [monthly]
    client.close_run("ACME", "2026-10")
    [invoice] = wait_until("invoice", lambda: client.invoices())
    assert invoice["charges"][0]["quantity"] == 7  # 6 daily calls and the monthly file's new one, each once


def test_one_file_by_upload_then_by_email_and_by_ftp_is_held_as_the_same_content_each_time(settings, tmp_path):
    """The three real gateways (the admin API, the mail gateway over SMTP, the collector polling a
    pyftpdlib server) as their own processes: the first arrival is billed, the other two held."""
    import smtplib
    from email.message import EmailMessage

    from cdrflow.localkafka import free_port
    from cdrflow_app.orchestrate import pipeline
    from services.collector.credentials import Credentials, new_secret_key
    from services.collector.rules import parse_rule
    from services.collector.sources import SourceSpec, save_source
    from tests.peers.servers import ftp_server

    s = settings.model_copy(update={"mailgate_port": free_port(), "mail_domain": "cdr.test",
                                    "secret_key": new_secret_key(), "collector_settle_seconds": 0.3,
                                    "collector_timeout": 3.0})
    root = tmp_path / "carrier"
    (root / "daily").mkdir(parents=True)
    (root / "daily" / "gamma-cdr-20261001.csv").write_bytes(CSV)
    client = AdminClient.for_settings(s)
    with ftp_server(root) as ftp_port, pipeline(s, log_dir=str(tmp_path), services=UNSCHEDULED):
        first = client.upload(SAMPLES / "gamma-cdr-20261001.csv", carrier="gamma", kind="cdr", period="daily",
                              direction="outbound")["file_id"]
        wait_until("upload rated", lambda: status_of(client, first) == "rated")

        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = "billing@gamma.example", "gamma.daily@cdr.test", "CDRs"
        message.set_content("Resending yesterday's file.")
        message.add_attachment(gzip.compress(CSV), maintype="application", subtype="gzip",
                               filename="gamma-cdr-20261001.csv.gz")
        with smtplib.SMTP("127.0.0.1", s.mailgate_port, timeout=60) as smtp:
            smtp.send_message(message)
        by_mail = wait_until("mailed copy held", lambda: next(
            (f for f in client.files(status="held") if f["channel"] == "mailgate"), None))

        spec = SourceSpec(name="gamma-ftp", carrier="gamma", protocol="ftp", host="127.0.0.1", port=ftp_port,
                          username="carrier", credentials=Credentials(password="s3cret"), poll_interval=1,
                          rules=[parse_rule("daily/*.csv=cdr,daily,outbound")])
        database = Runtime(s, "test").database
        with database.transaction() as session:
            save_source(session, spec, s.secret_key)
        database.dispose()
        by_ftp = wait_until("collected copy held", lambda: next(
            (f for f in client.files(status="held") if f["channel"] == "collector"), None), timeout=120)

        for copy in (by_mail, by_ftp):
            assert copy["hold_reason"] == "duplicate"
            assert client.file(copy["file_id"])["candidates"][0]["file_id"] == first
        assert [c["channel"] for c in client.file(by_ftp["file_id"])["candidates"]] == ["upload", "mailgate"]
        assert by_mail["content_fingerprint"] == client.file(first)["content_fingerprint"]
        assert [f["file_id"] for f in client.files(status="rated")] == [first]
