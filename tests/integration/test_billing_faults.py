"""Billing under faults (issue 11, acceptance): a month end for 300 customers with two
schedulers closing their runs at once, while the invoicer, one scheduler and the sender are each
killed with SIGKILL and restarted at seeded random moments. The end must be a clean month end:
one billing run per customer and period, one invoice per customer for October and none for
November (nothing to bill), numbers INV-000001..INV-000300 without a gap or a repeat, totals
equal to a recomputation from the calls inserted here, one invoice-issued event id per invoice
(read from Kafka), and no invoice mailed twice: each mailed once, or its delivery ``uncertain``
because the sender was killed while the relay held the mail (the sender's kill is timed so: the
relay has taken a mail and holds its answer back).

Every service runs as its own process on the real broker and PostgreSQL, the relay is a real
SMTP server on 127.0.0.1 (aiosmtpd). The calls are inserted straight into the calls ledger, as
the invoicer stores them, of a file marked ``rated``: this test is about billing, not parsing.
Every wait is bounded; the story of what was killed when is printed with a failure."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from sqlalchemy import func, insert, select

from cdrflow.bus import Topic, topic_name
from cdrflow.db import Database
from cdrflow.db.models import BillingRun, Call, Customer, File, Invoice, InvoiceDelivery, NumberSequence
from cdrflow_app.orchestrate import spawn_service, stop_processes, wait_for_admin
from cdrflow.settings import Settings
from services.sender.delivery import SENT, UNCERTAIN
from tests.integration.conftest import read_topic
from tests.schemas import validate_event
from tests.peers.smtp import Inbox, smtp_relay
from tests.unit.test_delivery import SELLER

SEED = int(os.environ.get("CDRFLOW_TEST_CHAOS_SEED", "11"))
"""The seed of the kill moments and of the calls (set CDRFLOW_TEST_CHAOS_SEED to try others)."""
CUSTOMERS = 300
OCTOBER = (date(2026, 10, 1), date(2026, 11, 1))
NOVEMBER = (date(2026, 11, 1), date(2026, 12, 1))
"""(start, end exclusive) of the periods the scheduler closes: both ended, and the grace is 0."""
SAMPLE_CUSTOMERS = ("ACME", "BRISDENT")
"""The sample reference data's customers: no calls, so only their latest ended period (November)
is closed, with nothing to bill."""
SERVICES = ("admin", "invoicer", "sender", "scheduler-a", "scheduler-b")
"""Processes by name; ``scheduler-a`` and ``scheduler-b`` are two instances of ``cdrflow run scheduler``."""
FINISH_S = 170
"""Budget for everything after the services start (the test's own bound)."""
VAT = Decimal("0.20")
PENNY = Decimal("0.01")


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def relay() -> Iterator[tuple[Inbox, int]]:
    """The SMTP relay on 127.0.0.1 (``tests.peers.smtp.Inbox``: keeps every message it
    takes; while ``stalling``, takes a message and holds its answer back)."""
    with smtp_relay() as relay:
        yield relay


@pytest.fixture
def log_dir(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """Where the services write their logs (one directory per process); their tails are printed
    if the test fails."""
    logs = tmp_path / "logs"
    logs.mkdir()
    yield logs
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        for log_file in sorted(logs.rglob("*.log")):
            print(f"----- {log_file.relative_to(logs)} -----\n" + log_file.read_text(errors="replace")[-3000:])


# --- the month's data, and what it must bill ------------------------------------------------


def insert_month(database: Database, rng: random.Random) -> dict[str, tuple[int, Decimal, Decimal, Decimal]]:
    """300 monthly customers with a billing email, each with 2–6 rated calls in October on a file
    marked ``rated``, and every 10th with one more call on a file still ``parsed`` (not whole:
    never billed). Returns, per customer, what its October invoice must say, worked out here
    from the charges inserted: (calls, net, VAT, total), the net the exact sum of the charges
    rounded once, half up, to the penny, and VAT 20% of the net rounded once, half up.

    Every 7th customer's charges sum to exactly half a penny past a penny, where rounding half
    up (and rounding once, not per call) shows."""
    now = datetime.now(UTC)
    rated_file, partial_file = str(uuid.uuid4()), str(uuid.uuid4())
    files = [dict(id=file_id, fingerprint=uuid.uuid4().hex * 2, carrier="gamma", kind="cdr", period="monthly",
                  direction="outbound", original_name=name, size=1, channel="upload", received_at=now,
                  status=status, updated_at=now)
             for file_id, name, status in ((rated_file, "gamma-cdr-202610.csv", "rated"),
                                           (partial_file, "gamma-cdr-202610-late.csv", "parsed"))]
    customers, calls = [], []
    expected: dict[str, tuple[int, Decimal, Decimal, Decimal]] = {}
    for n in range(1, CUSTOMERS + 1):
        code = f"C{n:03d}"
        customers.append(dict(code=code, name=f"Customer {n} Ltd", billing_schedule="monthly",
                              billing_email=f"accounts@c{n:03d}.example", address=f"{n} High Street|Leeds LS1 1AA",
                              tax_code="standard", currency="GBP", payment_terms_days=30))
        micros = [rng.randrange(1, 3_000_000) for _ in range(rng.randint(2, 6))]
        if n % 7 == 0:  # one more call, so the sum ends in exactly 0.005
            micros.append(10_000 + (5_000 - sum(micros)) % 10_000)
            assert sum(micros) % 10_000 == 5_000
        for charge in micros:
            calls.append(call_row(rated_file, len(calls) + 1, code, charge, rng))
        if n % 10 == 0:
            calls.append(call_row(partial_file, len(calls) + 1, code, 9_999_999, rng))
        net = (Decimal(sum(micros)).scaleb(-6)).quantize(PENNY, rounding=ROUND_HALF_UP)
        vat = (net * VAT).quantize(PENNY, rounding=ROUND_HALF_UP)
        expected[code] = (len(micros), net, vat, net + vat)
    with database.transaction() as session:
        session.execute(insert(File), files)
        session.execute(insert(Customer), customers)
        session.execute(insert(Call), calls)
    return expected


def call_row(file_id: str, row: int, customer: str, charge_micros: int, rng: random.Random) -> dict:
    start = datetime(2026, 10, rng.randint(1, 30), rng.randint(8, 19), rng.randint(0, 59), tzinfo=UTC)
    duration = rng.randint(1, 900)
    return dict(file_id=file_id, row=row, carrier="gamma", direction="outbound", cli=f"4411330{row:05d}",
                dialled="441174960123", start=start, duration=duration, answered=True, customer=customer,
                tariff="business", destination="UK Geographic", band="peak", billable_seconds=duration,
                charge=Decimal(charge_micros).scaleb(-6), cost=Decimal(0), status="rated")


# --- observing ------------------------------------------------------------------------------


def progress(database: Database, relay: Inbox) -> dict[str, int]:
    """Billing runs closed, invoices issued, deliveries recorded sent, mails the relay took."""
    with database.transaction() as session:
        runs = session.scalar(select(func.count()).select_from(BillingRun)) or 0
        invoices = session.scalar(select(func.count()).select_from(Invoice).where(Invoice.number.is_not(None))) or 0
        sent = session.scalar(select(func.count()).select_from(InvoiceDelivery)
                              .where(InvoiceDelivery.status == SENT)) or 0
    return {"runs": runs, "invoices": invoices, "sent": sent, "mails": len(relay.messages)}


def messages_on(bootstrap: str, topic: str) -> int:
    """How many messages ``topic`` holds now (every partition, start to high watermark)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"observer-{uuid.uuid4().hex}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        total = 0
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def lag(bootstrap: str, group: str, topic: str) -> int:
    """Messages on ``topic`` that ``group`` has not committed yet (all of them if it never has)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        behind = 0
        for tp in consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
            behind += high - (tp.offset if tp.offset >= 0 else low)
        return behind
    finally:
        consumer.close()


def number_of(message: object) -> str:
    """The invoice number of a mail, from its Message-ID ``<INV-000001.1@domain>``."""
    return message["Message-ID"].strip("<>").split(".")[0]  # type: ignore[index]


def events_on(bootstrap: str, topic: str) -> list[dict]:
    """Every event on ``topic``, repeats kept (so a duplicate shows)."""
    count = messages_on(bootstrap, topic)
    values = read_topic(bootstrap, topic, count, timeout=60)
    assert len(values) == count, f"read {len(values)} of the {count} messages on {topic}"
    return [orjson.loads(v) for v in values]


class Chaos:
    """The processes of one run, and the faults struck at them, each noted with where billing
    was when it struck."""

    def __init__(self, settings: Settings, log_dir: Path, database: Database, relay: Inbox) -> None:
        self.settings, self.log_dir, self.database, self.relay = settings, log_dir, database, relay
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.started = time.monotonic()
        self.notes: list[str] = []
        self.exited_alone: list[str] = []

    def spawn(self, name: str) -> None:
        service = name.split("-")[0]
        logs = self.log_dir / name
        logs.mkdir(exist_ok=True)
        self.procs[name] = spawn_service(service, self.settings, str(logs))

    def note(self, what: str) -> None:
        p = progress(self.database, self.relay)
        self.notes.append(f"{time.monotonic() - self.started:6.1f}s {what} "
                          f"(runs {p['runs']}, invoices {p['invoices']}, sent {p['sent']}, mails {p['mails']})")

    def kill(self, name: str, detail: str = "") -> None:
        """SIGKILL the process (no chance to finish anything) and start a new one in its place."""
        proc = self.procs[name]
        if proc.poll() is not None:
            self.exited_alone.append(f"{name} (exit status {proc.returncode})")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        self.note(f"killed {name}{detail}")
        self.spawn(name)

    def kill_sender_mid_hand_over(self, timeout: float = 45) -> str | None:
        """SIGKILL the sender while the relay holds its answer to a mail it has taken (so the
        sender can't know it went), restart it; the number of that mail, or None if no mail
        came within ``timeout`` (then it is killed anyway)."""
        self.relay.stalling = True
        try:
            taken = len(self.relay.messages)
            deadline = time.monotonic() + timeout
            while len(self.relay.messages) == taken and time.monotonic() < deadline:
                time.sleep(0.01)
            held = number_of(self.relay.messages[-1]) if len(self.relay.messages) > taken else None
            self.kill("sender", f" while the relay held its answer to {held}" if held else " (no mail in hand)")
        finally:
            self.relay.stalling = False
        return held

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                self.exited_alone.append(f"{name} (exit status {proc.returncode})")

    def wait(self, what: str, done: Callable[[], bool], deadline: float) -> bool:
        """Poll ``done`` until true or the test's deadline; noted either way."""
        while not done():
            if time.monotonic() > deadline:
                self.note(f"gave up waiting for {what}")
                return False
            time.sleep(0.25)
        self.note(what)
        return True

    def __str__(self) -> str:
        return f"seed {SEED}\n" + "\n".join(self.notes)


# --- the test -------------------------------------------------------------------------------


def test_month_end_with_invoicer_scheduler_and_sender_killed_bills_and_mails_each_customer_once(
        settings, database, relay, log_dir):
    """Admin, invoicer, sender and two schedulers, each its own process; each of a scheduler, the
    invoicer and the sender is killed once its stage has done a seeded random share of the month
    (the sender while the relay holds its answer to a mail), and restarted."""
    rng = random.Random(SEED)
    inbox, smtp_port = relay
    run = settings.model_copy(update=SELLER | {
        "smtp_host": "127.0.0.1", "smtp_port": smtp_port, "billing_grace_hours": 0.0,
        "scheduler_interval_seconds": 1.0})
    expected = insert_month(database, rng)
    october_runs = {(code, *OCTOBER) for code in expected}
    all_runs = october_runs | {(code, *NOVEMBER) for code in (*expected, *SAMPLE_CUSTOMERS)}
    # Kill moments: each when its stage has done a seeded share of the month, then a little more.
    kill_at = {"scheduler-a": ("runs", rng.randint(20, len(all_runs) * 2 // 3)),
               "invoicer": ("invoices", rng.randint(20, CUSTOMERS * 2 // 3)),
               "sender": ("mails", rng.randint(20, CUSTOMERS * 2 // 3))}
    issued_topic = topic_name(run.namespace, Topic.INVOICE_ISSUED)
    closed_topic = topic_name(run.namespace, Topic.RUN_CLOSED)

    chaos = Chaos(run, log_dir, database, inbox)
    held: str | None = None  # the invoice whose mail the relay held when the sender was killed
    try:
        for name in SERVICES:
            chaos.spawn(name)
        chaos.note("services started; kills planned at " +
                   ", ".join(f"{name} at {metric} {n}" for name, (metric, n) in kill_at.items()))
        deadline = chaos.started + FINISH_S
        while kill_at and time.monotonic() < deadline:
            now = progress(database, inbox)
            for name, (metric, n) in list(kill_at.items()):
                if now[metric] >= n:
                    if name == "sender":
                        held = chaos.kill_sender_mid_hand_over()
                    else:
                        time.sleep(rng.uniform(0.0, 0.2))
                        chaos.kill(name)
                    del kill_at[name]
            time.sleep(0.05)
        for name, (metric, n) in kill_at.items():  # a stage that never got that far: killed anyway
            chaos.note(f"{metric} never reached {n}")
            if name == "sender":
                held = chaos.kill_sender_mid_hand_over()
            else:
                chaos.kill(name)

        wait_for_admin(run, {"admin": chaos.procs["admin"]})
        chaos.wait("every run closed", lambda: progress(database, inbox)["runs"] >= len(all_runs), deadline)
        chaos.wait("every October invoice issued",
                   lambda: progress(database, inbox)["invoices"] >= CUSTOMERS, deadline)
        chaos.wait("every run-closed event consumed by the invoicer",
                   lambda: lag(run.bootstrap, f"{run.namespace}.invoicer", closed_topic) == 0, deadline)

        def deliveries_final() -> bool:
            with database.transaction() as session:
                statuses = Counter(session.scalars(select(InvoiceDelivery.status)))
            return statuses[SENT] + statuses[UNCERTAIN] >= CUSTOMERS

        chaos.wait("every delivery sent or uncertain", deliveries_final, deadline)
        chaos.wait("every invoice-issued event consumed by the sender",
                   lambda: lag(run.bootstrap, f"{run.namespace}.sender", issued_topic) == 0, deadline)
        time.sleep(2)  # a scheduler, invoicer or sender that would do something twice has had its chance
        chaos.check_alive()
        issued_events = events_on(run.bootstrap, issued_topic)
        closed_events = events_on(run.bootstrap, closed_topic)
        chaos.note(f"read {len(issued_events)} invoice-issued and {len(closed_events)} run-closed event(s)")
    finally:
        stop_processes(chaos.procs)

    story = str(chaos)
    print(story)  # what struck when: shown with a failure, or with -rP
    with database.transaction() as session:
        runs = session.execute(select(BillingRun.id, BillingRun.customer, BillingRun.period_start,
                                      BillingRun.period_end)).all()
        every_invoice = list(session.scalars(select(Invoice)))
        invoices = {i.customer: i for i in every_invoice if (i.period_start, i.period_end) == OCTOBER}
        lines = {i.customer: [(c.description, c.quantity, c.amount, c.tax_code, c.kind) for c in i.charges]
                 for i in invoices.values()}
        billed_calls = dict(session.execute(select(Invoice.customer, func.count()).join(
            Call, Call.invoice_id == Invoice.id).group_by(Invoice.customer)).all())
        unrated_file_billed = session.scalar(select(func.count()).select_from(Call).join(
            File, File.id == Call.file_id).where(File.status != "rated", Call.invoice_id.is_not(None)))
        next_value = session.scalar(select(NumberSequence.next_value).where(NumberSequence.name == "invoice"))
        deliveries = session.execute(select(InvoiceDelivery.document_number, InvoiceDelivery.status,
                                            InvoiceDelivery.to_address)).all()

    # billing runs: one per customer and period, whoever closed it (two schedulers, one killed)
    by_key = Counter((customer, start, end) for _, customer, start, end in runs)
    assert set(by_key) == all_runs and set(by_key.values()) == {1}, (
        f"{len(runs)} billing run(s) for {len(all_runs)} (customer, period) pairs; missing "
        f"{sorted(all_runs - set(by_key))[:5]}, extra {sorted(set(by_key) - all_runs)[:5]}\n{story}")
    # run-closed: one event id per run (repeats allowed, with the same id), none for a run not kept
    closed_ids: dict[str, set[str]] = {}
    for event in closed_events:
        closed_ids.setdefault(event["data"]["run_id"], set()).add(event["id"])
    assert set(closed_ids) == {run_id for run_id, *_ in runs}, \
        f"run-closed events for {len(closed_ids)} run(s), {len(runs)} run(s) kept\n{story}"
    assert all(len(ids) == 1 for ids in closed_ids.values()), story

    # invoices: one per customer for October, none for November (nothing to bill), the figures
    # worked out from the calls inserted
    others = sorted((i.customer, i.period_start) for i in every_invoice if (i.period_start, i.period_end) != OCTOBER)
    assert others == [], f"{len(others)} invoice(s) of other periods, e.g. {others[:5]}\n{story}"
    assert set(invoices) == set(expected), (
        f"{len(invoices)} invoice(s); missing {sorted(set(expected) - set(invoices))[:5]}, "
        f"unexpected {sorted(set(invoices) - set(expected))[:5]}\n{story}")
    wrong = {code: ((i.net, i.tax, i.total), expected[code][1:]) for code, i in invoices.items()
             if (i.net, i.tax, i.total) != expected[code][1:]}
    assert not wrong, f"{len(wrong)} invoice(s) with wrong figures, e.g. {list(wrong.items())[:3]}\n{story}"
    wrong_lines = {code: got for code, got in lines.items()
                   if got != [("Call Charges", expected[code][0], expected[code][1], "standard", "calls")]}
    assert not wrong_lines, \
        f"{len(wrong_lines)} invoice(s) with wrong lines, e.g. {list(wrong_lines.items())[:3]}\n{story}"
    assert billed_calls == {code: calls for code, (calls, *_) in expected.items()}, story
    assert unrated_file_billed == 0, f"{unrated_file_billed} call(s) of a file not yet rated were billed"
    # numbers: gap-free, no repeats, none taken and lost
    numbers = sorted(i.number for i in invoices.values())
    assert numbers == [f"INV-{n:06d}" for n in range(1, CUSTOMERS + 1)], (
        f"numbers {numbers[:3]}…{numbers[-3:]}; repeated {[n for n, c in Counter(numbers).items() if c > 1][:5]}"
        f"\n{story}")
    assert next_value == CUSTOMERS + 1, f"the invoice sequence is at {next_value}: numbers were taken and lost"

    # invoice-issued: one event id per invoice, its figures as invoiced, each valid by its schema
    issued_ids: dict[str, set[str]] = {}
    for event in issued_events:
        validate_event(event)
        d = event["data"]
        issued_ids.setdefault(d["invoice_number"], set()).add(event["id"])
        invoice = invoices[d["customer"]]
        assert (d["invoice_number"], d["period"], Decimal(d["net"]), Decimal(d["tax"]), Decimal(d["total"])) == (
            invoice.number, "2026-10", invoice.net, invoice.tax, invoice.total), f"{d}\n{story}"
    assert set(issued_ids) == set(numbers), (
        f"invoice-issued for {len(issued_ids)} of {len(numbers)} invoices; missing "
        f"{sorted(set(numbers) - set(issued_ids))[:5]}\n{story}")
    assert all(len(ids) == 1 for ids in issued_ids.values()), \
        f"invoices with more than one event id: {[n for n, ids in issued_ids.items() if len(ids) > 1][:5]}\n{story}"

    # email: never two mails of one invoice; each invoice mailed once, or uncertain (the sender
    # was killed with the mail handed over) and mailed at most once
    mails = Counter(number_of(m) for m in inbox.messages)
    to_of = {number_of(m): m["To"] for m in inbox.messages}
    status_of = {number: status for number, status, _ in deliveries}
    sent = sorted(n for n, s in status_of.items() if s == SENT)
    uncertain = sorted(n for n, s in status_of.items() if s == UNCERTAIN)
    twice = sorted(n for n, c in mails.items() if c > 1)
    counts = (f"{len(numbers)} invoices, {len(deliveries)} deliveries: {len(sent)} sent, {len(uncertain)} uncertain "
              f"({sum(1 for n in uncertain if mails[n])} of them mailed), other statuses "
              f"{dict(Counter(s for s in status_of.values() if s not in (SENT, UNCERTAIN)))}; "
              f"{len(inbox.messages)} mails for {len(mails)} invoices, {len(twice)} mailed twice {twice[:5]}")
    print(counts)
    assert not twice, f"{counts}\n{story}"
    assert len(deliveries) == len(status_of) == CUSTOMERS and set(status_of) == set(numbers), f"{counts}\n{story}"
    assert set(sent) | set(uncertain) == set(numbers), f"{counts}\n{story}"
    assert all(mails[n] == 1 for n in sent), \
        f"recorded sent but not mailed: {[n for n in sent if not mails[n]][:5]}; {counts}\n{story}"
    assert held is not None and status_of.get(held) == UNCERTAIN and mails[held] == 1, (
        f"the mail held by the relay when the sender was killed ({held}): delivery {status_of.get(held)}, "
        f"mailed {mails[held] if held else 0} time(s); {counts}\n{story}")
    assert set(mails) <= set(numbers), f"mails for no invoice: {sorted(set(mails) - set(numbers))[:5]}"
    address_of = {i.number: f"accounts@c{int(code[1:]):03d}.example" for code, i in invoices.items()}
    assert all(to == address_of[n] for n, to in to_of.items()), f"mails to the wrong address\n{story}"
    assert all(to == address_of[n] for n, _, to in deliveries), story
    assert chaos.exited_alone == [], f"processes that exited by themselves: {chaos.exited_alone}\n{story}"
