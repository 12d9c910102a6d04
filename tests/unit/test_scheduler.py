"""The scheduler and billing runs closed by hand (SQLite; no broker): each customer's ended
periods closed once after the grace, whatever runs twice; ``cdrflow bill`` over the admin API
on the same path, refusing what has not ended unless forced with a reason."""

import threading
from datetime import UTC, date, datetime, timedelta

import orjson
import pytest
from click.testing import CliRunner
from sqlalchemy import select
from starlette.testclient import TestClient

import services.admin.app
import services.scheduler.commands
from cdrflow_app.cli import main
from cdrflow.client import AdminClient
from cdrflow.db.models import BillingRun, Invoice, OutboxEntry
from cdrflow.events import Event
from services.invoicer.periods import BillingSchedule, Period
from services.invoicer.service import Invoicer
from services.rater.reference import save_customer
from services.scheduler.customers import set_billing_terms
from services.scheduler.service import Scheduler
from tests.schemas import validate_event
from tests.unit.test_dlq_api import RecordingProducer
from tests.unit.test_handlers import handle, runtime, through_pipeline  # noqa: F401  (fixture)
from tests.authhelp import authed

NOV_CLOSABLE = datetime(2026, 12, 2, 0, 0, tzinfo=UTC)
"""November 2026 ends at 00:00 GMT on 1 December; with 24 h of grace it is closable from here."""


def customer(runtime, code, schedule, starts):
    with runtime.database.transaction() as session:
        row = save_customer(session, code, f"{code} Ltd", "business")
        set_billing_terms(session, row, schedule=schedule)
        row.billing_starts = starts


@pytest.fixture
def scheduled(runtime):
    """Three customers on the three kinds of schedule; the sample customers are removed so
    that every run in the database is one of theirs."""
    with runtime.database.transaction() as session:
        from cdrflow.db.models import Customer, CustomerCli

        session.query(CustomerCli).delete()
        session.query(Customer).delete()
    customer(runtime, "MONTHLY", "monthly", date(2026, 10, 1))
    customer(runtime, "WEEKLY", "weekly", date(2026, 11, 2))  # a Monday
    customer(runtime, "QUARTERLY", "quarterly", date(2026, 7, 1))
    return runtime


def runs(runtime):
    with runtime.database.transaction() as session:
        return sorted((r.customer, Period(r.period_start, r.period_end).label, r.closed_by)
                      for r in session.scalars(select(BillingRun)))


def outbox(runtime, publisher="scheduler"):
    with runtime.database.transaction() as session:
        return [orjson.loads(e.payload) for e in session.scalars(
            select(OutboxEntry).where(OutboxEntry.publisher == publisher).order_by(OutboxEntry.id))]


def test_the_scheduler_closes_each_schedules_ended_periods_once_the_grace_has_passed(scheduled):
    closed = Scheduler(scheduled).tick(NOV_CLOSABLE)
    assert closed.failed == ()
    assert runs(scheduled) == [
        ("MONTHLY", "2026-10", "scheduler"), ("MONTHLY", "2026-11", "scheduler"),
        ("QUARTERLY", "2026-Q3", "scheduler"),  # Q4 ends on 1 January
        # weeks from Monday 2 November; W49 (30 Nov - 6 Dec) has not ended
        ("WEEKLY", "2026-W45", "scheduler"), ("WEEKLY", "2026-W46", "scheduler"),
        ("WEEKLY", "2026-W47", "scheduler"), ("WEEKLY", "2026-W48", "scheduler"),
    ]


def test_a_period_is_not_closed_a_moment_before_its_grace_ends(scheduled):
    scheduler = Scheduler(scheduled)
    scheduler.tick(NOV_CLOSABLE - timedelta(microseconds=1))
    assert [label for code, label, _ in runs(scheduled) if code == "MONTHLY"] == ["2026-10"]
    scheduler.tick(NOV_CLOSABLE)
    assert [label for code, label, _ in runs(scheduled) if code == "MONTHLY"] == ["2026-10", "2026-11"]


def test_the_grace_comes_from_the_settings(scheduled):
    scheduled.settings = scheduled.settings.model_copy(update={"billing_grace_hours": 48})
    Scheduler(scheduled).tick(NOV_CLOSABLE)
    assert [label for code, label, _ in runs(scheduled) if code == "MONTHLY"] == ["2026-10"]


def test_two_ticks_and_a_second_scheduler_close_nothing_new(scheduled):
    first = Scheduler(scheduled).tick(NOV_CLOSABLE)
    again = Scheduler(scheduled).tick(NOV_CLOSABLE)
    once_more = Scheduler(scheduled).tick(NOV_CLOSABLE + timedelta(hours=1))
    assert len(first.closed) == 7 and again.closed == () and once_more.closed == ()
    assert len(runs(scheduled)) == 7
    assert len(outbox(scheduled)) == 7  # one run-closed event per run


def test_two_schedulers_at_the_same_moment_close_each_period_once(scheduled):
    start = threading.Barrier(2)
    results = []

    def tick():
        scheduler = Scheduler(scheduled)
        start.wait()
        results.append(scheduler.tick(NOV_CLOSABLE))

    threads = [threading.Thread(target=tick) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # A scheduler that lost a race for a customer made nothing (or retries it next tick): never two runs.
    assert sum(len(r.closed) for r in results) == 7
    assert len(runs(scheduled)) == 7 and len(outbox(scheduled)) == 7


def test_run_closed_events_of_every_schedule_match_the_widened_schema(scheduled):
    customer(scheduled, "MID", "monthly:15", date(2026, 10, 15))
    Scheduler(scheduled).tick(NOV_CLOSABLE)
    events = outbox(scheduled)
    for event in events:
        validate_event(event)
    labels = {e["data"]["period"] for e in events}
    assert {"2026-10", "2026-Q3", "2026-W45", "2026-10-15..2026-11-14"} <= labels
    weekly = next(e for e in events if e["data"]["period"] == "2026-W45")
    assert weekly["data"] | {"run_id": "-"} == {
        "run_id": "-", "customer": "WEEKLY", "period": "2026-W45", "period_start": "2026-11-02",
        "period_end": "2026-11-09", "trigger": "schedule", "closed_by": "scheduler"}
    assert weekly["source"] == "cdrflow/test" and weekly["subject"] == "WEEKLY/2026-W45"


def test_a_customer_without_a_start_or_calls_is_billed_from_its_latest_ended_period(scheduled):
    customer(scheduled, "NEWCO", "monthly", None)
    Scheduler(scheduled).tick(NOV_CLOSABLE)
    assert [label for code, label, _ in runs(scheduled) if code == "NEWCO"] == ["2026-11"]


def test_one_customers_broken_schedule_does_not_stop_the_others(scheduled):
    with scheduled.database.transaction() as session:
        from cdrflow.db.models import Customer

        session.get(Customer, "WEEKLY").billing_schedule = "fortnightly"
    tick = Scheduler(scheduled).tick(NOV_CLOSABLE)
    assert [code for code, _ in tick.failed] == ["WEEKLY"] and "fortnightly" in tick.failed[0][1]
    assert {code for code, _, _ in runs(scheduled)} == {"MONTHLY", "QUARTERLY"}


def test_the_scheduler_stops_when_told(scheduled):
    scheduled.settings = scheduled.settings.model_copy(update={"scheduler_interval_seconds": 30})
    stop, woken = threading.Event(), []

    class Relay:
        def wake(self):
            woken.append(True)

    thread = threading.Thread(target=Scheduler(scheduled).run, args=(stop, Relay()))
    thread.start()
    stop.set()
    thread.join(5)
    assert not thread.is_alive()


# --- by hand: cdrflow bill over the admin API ----------------------------------------


@pytest.fixture
def bill(runtime, monkeypatch):
    runtime.__dict__["producer"] = RecordingProducer()
    monkeypatch.setattr(services.admin.app, "ANNOUNCE_WAIT_S", 0)  # no relay runs here: don't wait for it
    api = authed(TestClient(services.admin.app.create_app(runtime)), runtime)
    client = AdminClient("http://testserver")
    client._http = api
    monkeypatch.setattr(services.scheduler.commands, "_admin", lambda ctx: client)
    yield lambda *args: CliRunner().invoke(main, ["bill", *args, "--operator", "alice"])
    api.close()


def current_month() -> Period:
    return BillingSchedule.monthly().period_containing(datetime.now(UTC).date())


def test_bill_refuses_a_period_that_has_not_ended_without_force(scheduled, bill):
    month = current_month().label
    refused = bill("--customer", "MONTHLY", "--period", month)
    assert refused.exit_code == 1
    assert f"MONTHLY {month} has not ended" in refused.output and "--force" in refused.output
    assert runs(scheduled) == []
    no_reason = bill("--customer", "MONTHLY", "--period", month, "--force")
    assert no_reason.exit_code == 2 and "--force needs --reason" in no_reason.output


def test_bill_with_force_and_a_reason_closes_it_and_records_the_reason(scheduled, bill):
    month = current_month().label
    forced = bill("--customer", "MONTHLY", "--period", month, "--force", "--reason", "customer leaving")
    assert forced.exit_code == 0, forced.output
    assert f"MONTHLY {month}: billing run" in forced.output and "closed" in forced.output
    with scheduled.database.transaction() as session:
        [run] = session.scalars(select(BillingRun)).all()
        assert (run.closed_by, run.reason) == ("alice", "customer leaving")
    [event] = outbox(scheduled, "admin")
    validate_event(event)
    assert (event["data"]["trigger"], event["data"]["closed_by"], event["data"]["reason"]) == \
        ("manual", "alice", "customer leaving")


def test_bill_without_a_period_closes_the_latest_ended_one(scheduled, bill):
    closed = bill("--customer", "WEEKLY", "--json")
    assert closed.exit_code == 0, closed.output
    [reply] = orjson.loads(closed.output)
    latest = BillingSchedule.weekly().previous_period(BillingSchedule.weekly().period_containing(
        datetime.now(UTC).date()))
    assert (reply["period"], reply["already"], reply["closed_by"]) == (latest.label, False, "alice")


def test_bill_twice_makes_nothing_new_and_names_the_invoice_the_run_made(runtime, bill):
    through_pipeline(runtime, "gamma-cdr-20261001.csv", "gamma")  # ACME's October calls
    first = bill("--customer", "ACME", "--period", "2026-10")
    assert first.exit_code == 0, first.output
    not_yet = bill("--customer", "ACME", "--period", "2026-10")
    assert not_yet.output == "ACME 2026-10: closed already by alice; no invoice yet (nothing new made)\n"
    [event] = outbox(runtime, "admin")
    handle(runtime, Invoicer(runtime).on_run_closed, Event.from_bytes(orjson.dumps(event)))
    with runtime.database.transaction() as session:
        number = session.scalar(select(Invoice.number))
    again = bill("--customer", "ACME", "--period", "2026-10-01")  # the first day names it too
    assert again.exit_code == 0
    assert again.output == f"ACME 2026-10: closed already by alice; invoice {number} (nothing new made)\n"
    assert len(runs(runtime)) == 1 and len(outbox(runtime, "admin")) == 1


def test_a_run_the_scheduler_closed_is_not_closed_again_by_hand(scheduled, bill):
    Scheduler(scheduled).tick(NOV_CLOSABLE)
    again = bill("--customer", "QUARTERLY", "--period", "2026-Q3")
    assert again.output.startswith("QUARTERLY 2026-Q3: closed already by scheduler;")


def test_bill_refuses_a_period_that_is_not_one_of_the_customers_schedule(scheduled, bill):
    customer(scheduled, "MID", "monthly:15", date(2026, 10, 15))
    refused = bill("--customer", "MID", "--period", "2026-10")
    assert refused.exit_code == 1
    assert "is not a period of schedule monthly:15" in refused.output
    assert "2026-09-15..2026-10-14" in refused.output and "2026-10-15..2026-11-14" in refused.output


def test_bill_by_schedule_bills_only_its_customers_and_all_bills_everyone(scheduled, bill):
    weekly = bill("--schedule", "weekly:mon", "--period", "2026-W45", "--json")
    assert [r["customer"] for r in orjson.loads(weekly.output)] == ["WEEKLY"]
    everyone = bill("--all")  # each customer's latest ended period
    assert everyone.exit_code == 0, everyone.output
    assert [line.split()[0] for line in everyone.output.splitlines()] == ["MONTHLY", "QUARTERLY", "WEEKLY"]
    assert len(runs(scheduled)) == 4
    nobody = bill("--schedule", "quarterly:2")
    assert nobody.exit_code == 2 and "no customer is on billing schedule quarterly:2" in nobody.output


def test_bill_an_unknown_customer_says_so(scheduled, bill):
    refused = bill("--customer", "NOSUCH", "--period", "2026-10")
    assert refused.exit_code == 1 and "unknown customer 'NOSUCH'" in refused.output and "HTTP 404" in refused.output


def test_a_later_period_closed_by_hand_does_not_hide_an_earlier_one_from_the_scheduler(scheduled, bill):
    assert bill("--customer", "MONTHLY", "--period", "2026-11").exit_code == 0
    Scheduler(scheduled).tick(NOV_CLOSABLE)
    assert [(label, by) for code, label, by in runs(scheduled) if code == "MONTHLY"] == \
        [("2026-10", "scheduler"), ("2026-11", "alice")]


def test_a_customer_without_a_start_is_billed_from_its_earliest_unbilled_call(runtime):
    through_pipeline(runtime, "gamma-cdr-20261001.csv", "gamma")  # ACME's calls of 1 October
    Scheduler(runtime).tick(NOV_CLOSABLE)
    assert [label for code, label, _ in runs(runtime) if code == "ACME"] == ["2026-10", "2026-11"]
