"""The mail gateway as it runs in production: ``cdrflow run mailgate`` as its own process on
127.0.0.1, smtplib as the carrier's mail client, the real broker and PostgreSQL behind it."""

from __future__ import annotations

import io
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from hashlib import sha256

import orjson
import pytest
from sqlalchemy import func, select

from cdrflow.bus import Topic, topic_name
from cdrflow.db.models import File, MailMessage
from cdrflow.filestore import FileStore
from cdrflow.localkafka import free_port
from cdrflow_app.orchestrate import settings_env, spawn_service, stop_processes
from cdrflow.settings import Settings
from services.mailgate.carriers import set_mail_rules
from services.mailgate.extract import Limits, extract
from services.mailgate.worker import mailed_file_id
from tests.integration.conftest import read_topic, wait_until
from tests.peers.servers import self_signed_cert
from tests.schemas import validate_event

DOMAIN = "cdr.test"
MAX_MESSAGE = 2_000_000  # bytes
MAX_UNPACKED = 10_000_000  # bytes
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 200


def cdr(tag: str) -> bytes:
    """A small CDR whose bytes are unique to ``tag``."""
    return f"cli,dialled,start,duration,cost\n+441632960001,01174960123,2026-10-01T09:15:00,125,0.0030\n# {tag}\n" \
        .encode()


def mail(to: str, attachments: dict[str, bytes] | None = None, sender: str = "billing@gamma.example") -> EmailMessage:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = sender, to, "CDRs"
    m.set_content("Please find this month's files attached.\n\n-- \nGamma Billing")
    for name, data in (attachments or {}).items():
        m.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return m


def wire(message: EmailMessage) -> bytes:
    """The message as it travels over SMTP (CRLF line ends), as smtplib's send_message writes it."""
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


class Gateway:
    """One ``cdrflow run mailgate`` process."""

    def __init__(self, settings: Settings, log_dir: str) -> None:
        self.settings = settings
        self.port = settings.mailgate_port
        self.proc = spawn_service("mailgate", settings, log_dir)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "the mail gateway exited at start-up (see mailgate.log)"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"the mail gateway did not listen on port {self.port} within 60s")

    def smtp(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.port, local_hostname="carrier.example", timeout=60)

    def send(self, message: EmailMessage, recipients: list[str] | None = None) -> str:
        """Send and return the gateway's 250 text (smtplib raises on any refusal)."""
        with self.smtp() as client:
            client.ehlo()
            code, reply = client.mail(message["From"], [f"SIZE={len(wire(message))}"])
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, reply, message["From"])
            for rcpt in recipients or [message["To"]]:
                code, reply = client.rcpt(rcpt)
                if code != 250:
                    raise smtplib.SMTPRecipientsRefused({rcpt: (code, reply)})
            code, reply = client.data(wire(message))
            if code != 250:
                raise smtplib.SMTPDataError(code, reply)
            return reply.decode()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        stop_processes({"mailgate": self.proc})


@pytest.fixture
def msettings(settings: Settings) -> Settings:
    return settings.model_copy(update={"mail_domain": DOMAIN, "mailgate_port": free_port(),
                                       "mailgate_max_message_bytes": MAX_MESSAGE, "mailgate_max_attachments": 20,
                                       "mailgate_max_unpacked_bytes": MAX_UNPACKED})


@pytest.fixture
def mail_rules(msettings, database) -> None:
    """gamma's files start 'gamma', btw's 'btw'; only btw.example may mail btw's files."""
    with database.transaction() as session:
        set_mail_rules(session, "gamma", file_name_pattern=r"^gamma[-_]")
        set_mail_rules(session, "btw", file_name_pattern=r"^btw[-_]", mail_senders="@btw.example")


@pytest.fixture
def start_gateway(msettings, mail_rules, tmp_path, request) -> Iterator[Callable[..., Gateway]]:
    """Start gateway processes (settings may be overridden); all stopped at the end, logs shown on failure."""
    started: list[Gateway] = []

    def start(**overrides: object) -> Gateway:
        gateway = Gateway(msettings.model_copy(update=overrides), str(tmp_path))
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        for log_file in sorted(tmp_path.glob("*.log")):
            print(f"----- {log_file.name} -----\n" + log_file.read_text()[-6000:])


@pytest.fixture
def dedupe(msettings, tmp_path) -> Iterator[None]:
    """The dedupe service, which records each announced file as a row of ``files``."""
    proc = spawn_service("dedupe", msettings, str(tmp_path))
    yield
    stop_processes({"dedupe": proc})


def arrived(settings: Settings, count: int, timeout: float = 60) -> list[dict]:
    """The file-arrived events on the real topic (schema-checked); asks for one more than expected
    when ``count`` is an exact expectation, so an extra event would show."""
    events = [orjson.loads(v) for v in read_topic(settings.bootstrap, topic_name(settings.namespace,
                                                                                 Topic.FILE_ARRIVED), count, timeout)]
    for event in events:
        validate_event(event)
    return events


def message_id_of(reply: str) -> str:
    """The message id in the gateway's 250 reply: '2.0.0 accepted as <id>: n billing file(s)'."""
    return reply.split(" accepted as ", 1)[1].split(":", 1)[0]


def by_name(events: list[dict]) -> dict[str, dict]:
    return {e["data"]["original_name"]: e["data"] for e in events}


def messages(database) -> list[MailMessage]:
    with database.transaction() as session:
        return list(session.scalars(select(MailMessage).order_by(MailMessage.received_at)))


# --- acceptance -------------------------------------------------------------------------------


def test_each_address_form_announces_its_files_with_carrier_kind_and_period(msettings, start_gateway):
    gateway = start_gateway()
    sent = {
        f"cdrs@{DOMAIN}": "gamma_20261001.csv",  # carrier from the name
        f"gamma.cdrs@{DOMAIN}": "october-monthly.csv",  # period from the name
        f"Gamma.Daily@{DOMAIN.upper()}": "day.csv",
        f"gamma.monthly@{DOMAIN}": "month.csv",
        f"gamma.sdr@{DOMAIN}": "rentals.csv",
    }
    for to, name in sent.items():
        assert gateway.send(mail(to, {name: cdr(name)})).startswith("2.0.0 accepted as ")
    btw = gateway.send(mail(f"cdrs@{DOMAIN}", {"btw-20261002.csv": cdr("btw")}, sender="cdr@btw.example"))

    events = by_name(arrived(msettings, len(sent) + 2, timeout=30))
    got = {name: (d["carrier"], d["kind"], d["period"], d["direction"], d["channel"], d["details"]["recipient"])
           for name, d in events.items()}
    assert got == {
        "gamma_20261001.csv": ("gamma", "cdr", "daily", "outbound", "mailgate", f"cdrs@{DOMAIN}"),
        "october-monthly.csv": ("gamma", "cdr", "monthly", "outbound", "mailgate", f"gamma.cdrs@{DOMAIN}"),
        "day.csv": ("gamma", "cdr", "daily", "outbound", "mailgate", f"Gamma.Daily@{DOMAIN.upper()}"),
        "month.csv": ("gamma", "cdr", "monthly", "outbound", "mailgate", f"gamma.monthly@{DOMAIN}"),
        "rentals.csv": ("gamma", "sdr", "monthly", "outbound", "mailgate", f"gamma.sdr@{DOMAIN}"),
        "btw-20261002.csv": ("btw", "cdr", "daily", "outbound", "mailgate", f"cdrs@{DOMAIN}"),
    }
    assert all(d["fingerprint"] == sha256(cdr(n if n != "btw-20261002.csv" else "btw")).hexdigest()
               for n, d in events.items())
    assert message_id_of(btw) == events["btw-20261002.csv"]["details"]["message_id"]


def test_zip_and_forwarded_attachments_arrive_and_signature_images_are_ignored(msettings, database, start_gateway):
    gateway = start_gateway()
    message = mail(f"gamma.daily@{DOMAIN}")
    html = "<p>Regards,<br><img src='cid:logo@gamma'> <img src='cid:in@gamma'></p>"
    message.add_alternative(html, subtype="html")
    message.get_payload()[1].add_related(PNG, maintype="image", subtype="png", cid="<logo@gamma>",
                                         filename="image001.png")
    message.add_attachment(zipped({"october/a.csv": cdr("a"), "october/b.csv": cdr("b")}), maintype="application",
                           subtype="zip", filename="october.zip")
    message.add_attachment(PNG, maintype="image", subtype="png", filename="linkedin-icon.png")
    forwarded = mail("ops@reseller.example", {"c.csv": cdr("c")})
    message.add_attachment(forwarded)  # message/rfc822, as "forward as attachment" sends it
    gateway.send(message)

    events = by_name(arrived(msettings, 4, timeout=20))
    assert set(events) == {"a.csv", "b.csv", "c.csv"}
    assert events["a.csv"]["details"]["container"] == "october.zip"
    (stored,) = messages(database)
    outcome = orjson.loads(stored.outcome)
    assert stored.status == "processed"
    assert {f["name"] for f in outcome["files"]} == {"a.csv", "b.csv", "c.csv"}
    assert {p["name"] for p in outcome["ignored"]} == {"image001.png", "linkedin-icon.png"}
    assert all("not a billing file" in p["reason"] for p in outcome["ignored"])


def test_what_cant_be_taken_is_refused_in_the_conversation_with_the_reason(msettings, database, start_gateway):
    gateway = start_gateway()
    with gateway.smtp() as client:
        client.ehlo()
        assert client.has_extn("size") and int(client.esmtp_features["size"]) == MAX_MESSAGE
        client.mail("billing@gamma.example")
        code, reply = client.rcpt(f"invoices@{DOMAIN}")
        assert (code, reply.decode()) == (550, f"5.1.1 no such mailbox 'invoices': send files to cdrs@{DOMAIN}, "
                                               f"<carrier>.cdrs@{DOMAIN}, <carrier>.daily@{DOMAIN}, "
                                               f"<carrier>.monthly@{DOMAIN} or <carrier>.sdr@{DOMAIN}")
        code, reply = client.rcpt("cdrs@elsewhere.example")
        assert code == 550 and f"only takes mail for @{DOMAIN}" in reply.decode()
        code, reply = client.rcpt(f"nosuch.daily@{DOMAIN}")
        assert code == 550 and "no carrier 'nosuch'" in reply.decode()
        code, reply = client.rcpt(f"btw.daily@{DOMAIN}")  # gamma's address is not on btw's allow-list
        assert code == 550 and "may not send files for carrier btw" in reply.decode()
        for _ in range(10):
            assert client.rcpt(f"gamma.daily@{DOMAIN}")[0] == 250
        code, reply = client.rcpt(f"gamma.monthly@{DOMAIN}")
        assert code == 452 and "more than 10 recipients" in reply.decode()

    with pytest.raises(smtplib.SMTPSenderRefused) as too_big:  # declared with SIZE: refused at MAIL FROM
        gateway.send(mail(f"gamma.daily@{DOMAIN}", {"huge.csv": b"1" * MAX_MESSAGE}))
    assert too_big.value.smtp_code == 552 and f"limit of {MAX_MESSAGE} bytes" in too_big.value.smtp_error.decode()
    with gateway.smtp() as client:  # not declared: refused after DATA, with the same reason
        client.ehlo()
        client.mail("billing@gamma.example")
        client.rcpt(f"gamma.daily@{DOMAIN}")
        code, reply = client.data(wire(mail(f"gamma.daily@{DOMAIN}", {"huge.csv": b"1" * MAX_MESSAGE})))
        assert code == 552 and f"limit of {MAX_MESSAGE} bytes" in reply.decode()

    bomb = zipped({"bomb.csv": b"0" * (MAX_UNPACKED + 1)})
    assert len(bomb) < MAX_MESSAGE // 10
    with pytest.raises(smtplib.SMTPDataError) as refused:
        gateway.send(mail(f"gamma.daily@{DOMAIN}", {"october.zip": bomb}))
    assert refused.value.smtp_code == 552
    assert refused.value.smtp_error.decode() == (f"5.3.4 attachment october.zip unpacks to more than {MAX_UNPACKED} "
                                                 "bytes (a zip bomb?): message refused")
    with pytest.raises(smtplib.SMTPDataError) as unclaimed:
        gateway.send(mail(f"cdrs@{DOMAIN}", {"mystery.csv": cdr("m")}))
    assert "no carrier's file-name pattern matches it" in unclaimed.value.smtp_error.decode()
    with pytest.raises(smtplib.SMTPDataError) as only_logo:
        gateway.send(mail(f"gamma.daily@{DOMAIN}", {"logo.png": PNG}))
    assert only_logo.value.smtp_code == 554 and "no billing file attached" in only_logo.value.smtp_error.decode()

    gateway.send(mail(f"gamma.daily@{DOMAIN}", {"good.csv": cdr("good")}))
    events = arrived(msettings, 2, timeout=15)  # the good file, and nothing from what was refused
    assert [e["data"]["original_name"] for e in events] == ["good.csv"]
    assert len(messages(database)) == 1


def test_a_message_is_durable_before_250_and_a_restart_announces_it_once(msettings, database, start_gateway,
                                                                          dedupe):
    # The broker is unreachable for this process, so nothing can be announced before it is killed.
    first = start_gateway(kafka_bootstrap=f"127.0.0.1:{free_port()}")
    replies = []
    for i in range(3):
        attachments = {f"gamma_{i}.csv": cdr(f"r{i}")} if i else {"pair.zip": zipped({"x.csv": cdr("x"),
                                                                                      "y.csv": cdr("y")})}
        replies.append(first.send(mail(f"gamma.daily@{DOMAIN}", attachments)))
        spooled = messages(database)  # committed when the client got its 250
        assert len(spooled) == i + 1 and spooled[-1].status == "pending"
        assert message_id_of(replies[-1]) == spooled[-1].id
        raw = FileStore(first.settings.file_store_dir).read_bytes(spooled[-1].fingerprint)
        kept = {f.data for f in extract(raw, Limits(20, MAX_UNPACKED)).files}
        assert kept == ({cdr(f"r{i}")} if i else {cdr("x"), cdr("y")})
    first.kill()

    second = start_gateway()
    expected = {"x.csv", "y.csv", "gamma_1.csv", "gamma_2.csv"}
    events = arrived(msettings, len(expected), timeout=60)
    assert {e["data"]["original_name"] for e in events} == expected
    wait_until("the messages to be marked processed", lambda: all(m.status == "processed" for m in messages(database)))
    spooled = {m.id: m for m in messages(database)}
    assert {e["id"] for e in events} == {mailed_file_id(e["data"]["details"]["message_id"],
                                                        e["data"]["details"]["recipient"],
                                                        e["data"]["details"]["position"]) for e in events}
    wait_until("dedupe to record the files", lambda: file_count(database) == len(expected))

    # A crash after producing but before marking the messages processed: they are announced again,
    # under the same file ids, and the files are still recorded once each.
    second.kill()
    with database.transaction() as session:
        for message in session.scalars(select(MailMessage)):
            message.status = "pending"
    start_gateway()
    wait_until("the messages to be processed again",
               lambda: all(m.status == "processed" and m.processed_at > spooled[m.id].processed_at
                           for m in messages(database)))
    again = arrived(msettings, 2 * len(expected) + 1, timeout=15)
    assert sorted(e["id"] for e in again) == sorted(2 * [e["id"] for e in events])
    accepted = read_topic(msettings.bootstrap, topic_name(msettings.namespace, Topic.FILE_ACCEPTED),
                          2 * len(expected), timeout=30)
    assert len(accepted) == 2 * len(expected)  # dedupe saw the repeats: it answers each file-arrived
    assert file_count(database) == len(expected)


def cdrflow(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cdrflow_app", *args], env=os.environ | settings_env(settings),
                          capture_output=True, text=True, timeout=60)


def test_a_message_that_cant_be_announced_after_250_waits_as_failed_until_an_operator_retries_it(
        msettings, database, start_gateway):
    first = start_gateway(kafka_bootstrap=f"127.0.0.1:{free_port()}")
    message_id = message_id_of(first.send(mail(f"cdrs@{DOMAIN}", {"gamma_late.csv": cdr("late")})))
    first.kill()
    with database.transaction() as session:  # the carrier's pattern changes before the worker runs
        set_mail_rules(session, "gamma", file_name_pattern="^gamma-only-new-names")

    start_gateway()
    wait_until("the message to fail", lambda: messages(database)[0].status == "failed")
    listed = cdrflow(msettings, "mail", "messages", "--status", "failed")
    assert listed.returncode == 0, listed.stderr
    assert message_id in listed.stdout and "error   file gamma_late.csv: no carrier's file-name pattern" in listed.stdout
    assert arrived(msettings, 1, timeout=3) == []

    fixed = cdrflow(msettings, "mail", "rules", "gamma", "--file-name-pattern", "^gamma[-_]")
    retried = cdrflow(msettings, "mail", "retry", message_id)
    assert (fixed.returncode, retried.returncode) == (0, 0), fixed.stderr + retried.stderr
    (event,) = arrived(msettings, 2, timeout=15)
    assert (event["data"]["original_name"], event["data"]["details"]["message_id"]) == ("gamma_late.csv", message_id)
    again = cdrflow(msettings, "mail", "retry", message_id)
    assert again.returncode == 1 and "not failed: nothing to retry" in again.stderr


def file_count(database) -> int:
    with database.transaction() as session:
        return session.scalar(select(func.count()).select_from(File).where(File.channel == "mailgate"))


def test_starttls_and_auth_let_an_operator_forward_any_carriers_files(msettings, start_gateway, tmp_path):
    cert, key = self_signed_cert(tmp_path)
    gateway = start_gateway(mailgate_tls_cert=cert, mailgate_tls_key=key, mailgate_users="ops:correct-horse")
    with gateway.smtp() as client:
        client.ehlo()
        assert client.has_extn("starttls") and not client.has_extn("auth")  # no AUTH in the clear
        client.starttls(context=ssl.create_default_context(cafile=str(cert)))
        client.ehlo()
        assert client.has_extn("auth")
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login("ops", "wrong")
        client.login("ops", "correct-horse")
        message = mail(f"btw.monthly@{DOMAIN}", {"forwarded-btw.csv": cdr("fw")}, sender="ops@reseller.example")
        client.send_message(message)  # not on btw's allow-list, but authenticated
    (event,) = arrived(msettings, 2, timeout=15)
    d = event["data"]
    assert (d["carrier"], d["period"], d["details"]["authenticated_as"]) == ("btw", "monthly", "ops")
    log = (tmp_path / "mailgate.log").read_text()
    assert '"mail_auth"' in log and "correct-horse" not in log


def test_50_concurrent_clients_sending_20_mails_each_deliver_every_attachment_exactly_once(
        msettings, database, start_gateway, dedupe):
    gateway = start_gateway()
    clients, per_client = 50, 20
    expected: dict[str, str] = {}  # fingerprint -> name
    failures: list[BaseException] = []

    def client(c: int) -> None:
        try:
            with gateway.smtp() as smtp:
                for n in range(per_client):
                    name = f"gamma_{c:02d}_{n:02d}.csv"
                    to = f"cdrs@{DOMAIN}" if n % 2 else f"gamma.daily@{DOMAIN}"
                    smtp.send_message(mail(to, {name: cdr(name), "logo.png": PNG}))
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    for c in range(clients):
        for n in range(per_client):
            name = f"gamma_{c:02d}_{n:02d}.csv"
            expected[sha256(cdr(name)).hexdigest()] = name
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert failures == []
    total = clients * per_client

    wait_until("dedupe to record every mailed file", lambda: file_count(database) >= total, timeout=300)
    with database.transaction() as session:
        rows = session.execute(select(File.fingerprint, File.original_name, File.status)
                               .where(File.channel == "mailgate")).all()
    assert len(rows) == total
    assert {fp: name for fp, name, _ in rows} == expected  # every attachment, each once, no logo
    assert {status for _, _, status in rows} == {"accepted"}  # none held as a duplicate

    events = arrived(msettings, total + 1, timeout=30)
    assert len(events) == total
    assert sorted(e["data"]["fingerprint"] for e in events) == sorted(expected)
    assert len({e["id"] for e in events}) == total
