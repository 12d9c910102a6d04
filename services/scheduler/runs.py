"""Closing a billing run: one customer's period, once (pure library over a session).

The scheduler (after the grace) and an operator (``cdrflow bill``, ``POST /billing-runs``) close
runs through ``close_run`` alone, so both obey the same rules:

1. the customer exists and the period is one of its billing schedule's periods;
2. the period has ended (its end, local midnight in the operator's zone, is not in the future),
   unless forced with a reason, which is recorded on the run;
3. the run row is inserted if absent: the unique key (customer, period_start, period_end)
   decides, so two schedulers, a restart, or a command repeated close it once; whoever loses
   gets the existing run (and its invoice number, once issued);
4. the run-closed event goes into the transactional outbox in the same transaction as the run
   row: committed together or not at all, published afterwards by the caller's relay.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cdrflow.bus import Topic, topic_name
from cdrflow.bus.outbox import add_to_outbox
from cdrflow.db.models import BillingRun, Call, Customer, Invoice
from cdrflow.db.upsert import insert_new_returning
from cdrflow.errors import InputError
from cdrflow.events import Event, EventType, event_id
from services.invoicer.periods import BillingSchedule, Period, closable_periods, parse_period

SCHEDULER = "scheduler"
"""``closed_by`` of the runs the scheduler closes (an operator's name otherwise)."""


class UnknownCustomerError(InputError):
    """A billing run names a customer cdrflow does not have."""

    def __init__(self, customer: str) -> None:
        self.customer = customer
        super().__init__(f"unknown customer {customer!r}: add it with 'cdrflow customers add' or check the spelling")


class PeriodNotEndedError(InputError):
    """A billing run was asked for a period that has not ended, without --force and a reason."""


@dataclass(frozen=True)
class RunClosed:
    """What closing a run did: ``created`` (a new run, its run-closed event queued) or not, in
    which case the run existed already and nothing new was made."""

    created: bool
    run_id: str
    customer: str
    period: Period
    closed_by: str
    closed_at: datetime
    reason: str | None
    invoice_number: str | None = None  # the invoice the existing run made, once issued
    event_id: str | None = None  # the run-closed event queued (created only)

    @property
    def exists(self) -> bool:
        return not self.created

    def view(self) -> dict[str, object]:
        """The run as the API and ``cdrflow bill --json`` show it."""
        return {"run_id": self.run_id, "customer": self.customer, "period": self.period.label,
                "period_start": self.period.start.isoformat(), "period_end": self.period.end.isoformat(),
                "closed_by": self.closed_by, "closed_at": self.closed_at.isoformat(), "reason": self.reason,
                "already": self.exists, "invoice_number": self.invoice_number}


def schedule_of(customer: Customer) -> BillingSchedule:
    try:
        return BillingSchedule.parse(customer.billing_schedule or "monthly")
    except InputError as exc:
        raise InputError(f"customer {customer.code}: {exc}; fix it with 'cdrflow customers edit "
                         f"{customer.code} --schedule …'") from exc


def latest_ended_period(schedule: BillingSchedule, now: datetime, zone: ZoneInfo) -> Period:
    """The newest period of ``schedule`` whose end (local midnight) is at or before ``now``."""
    return closable_periods(schedule, None, now, zone, grace=timedelta(0))[0]


def period_to_close(session: Session, customer: str, text: str | None, now: datetime, zone: ZoneInfo) -> Period:
    """The period an operator names (``--period``) for ``customer``, or, without one, the
    latest ended period of the customer's schedule."""
    row = session.get(Customer, customer)
    if row is None:
        raise UnknownCustomerError(customer)
    schedule = schedule_of(row)
    if text is None or not text.strip():
        return latest_ended_period(schedule, now, zone)
    return parse_period(text, schedule)


def close_run(session: Session, *, customer: str, period: Period, closed_by: str, reason: str | None,
              source: str, publisher: str, namespace: str, zone: ZoneInfo, now: datetime | None = None,
              force: bool = False) -> RunClosed:
    """Close ``customer``'s ``period`` once (the steps in the module docstring, in that order).

    ``source`` is the CloudEvents source of the run-closed event and ``publisher`` the relay
    that publishes it (``scheduler`` or ``admin``); the caller commits ``session``."""
    now = now or datetime.now(UTC)
    row = session.get(Customer, customer)
    if row is None:
        raise UnknownCustomerError(customer)
    schedule_of(row).check_period(period)
    reason = (reason or "").strip() or None
    ends_at = period.utc_bounds(zone)[1]
    if ends_at > now:
        if not force:
            raise PeriodNotEndedError(
                f"{customer} {period.label} has not ended: it ends at {ends_at.astimezone(zone):%Y-%m-%d %H:%M %Z}; "
                "to bill it now anyway give --force and a --reason")
        if reason is None:
            raise PeriodNotEndedError(f"{customer} {period.label} has not ended: --force needs a --reason, "
                                      "which is recorded on the billing run")
    return open_runs(session, [(customer, period)], closed_by=closed_by, reason=reason, source=source,
                     publisher=publisher, namespace=namespace, now=now)[0]


def open_runs(session: Session, wanted: Sequence[tuple[str, Period]], *, closed_by: str, reason: str | None,
              source: str, publisher: str, namespace: str, now: datetime) -> list[RunClosed]:
    """Steps 3 and 4 of the module docstring for each (customer, period), checked already by
    the caller, with one statement each for all of them: the runs absent inserted (the unique
    key deciding), a run-closed event queued for each inserted, the existing run returned
    for each of the others. In the order of ``wanted``; a pair given twice is closed once."""
    invoiced = {(c, Period(start, end)) for c, start, end in session.execute(  # before runs were recorded
        select(Invoice.customer, Invoice.period_start, Invoice.period_end)
        .where(Invoice.customer.in_({customer for customer, _ in wanted}), Invoice.number.is_not(None)))}
    ids = {pair: str(uuid.uuid4()) for pair in wanted if pair not in invoiced}
    rows = [{"id": run_id, "customer": customer, "period_start": period.start, "period_end": period.end,
             "closed_at": now, "closed_by": closed_by, "reason": reason} for (customer, period), run_id in ids.items()]
    made = set(insert_new_returning(session, BillingRun.__table__, rows, ("customer", "period_start", "period_end"),
                                    BillingRun.__table__.c.id))
    topic = topic_name(namespace, Topic.RUN_CLOSED)
    closed: dict[tuple[str, Period], RunClosed] = {}
    for (customer, period), run_id in ids.items():
        if run_id in made:
            event = run_closed_event(run_id, customer, period, closed_by, reason, source)
            add_to_outbox(session, topic, customer, event, publisher=publisher)
            closed[(customer, period)] = RunClosed(True, run_id, customer, period, closed_by, now, reason,
                                                   event_id=event.id)
    for pair in wanted:
        if pair not in closed:  # closed before, or by another scheduler or operator meanwhile
            existing = _existing(session, *pair)
            assert existing is not None, f"billing run {pair[0]} {pair[1].label} conflicted but is not there"
            closed[pair] = existing
    return [closed[pair] for pair in wanted]


def run_closed_event(run_id: str, customer: str, period: Period, closed_by: str, reason: str | None,
                     source: str) -> Event:
    data: dict[str, object] = {
        "run_id": run_id, "customer": customer, "period": period.label,
        "period_start": period.start.isoformat(), "period_end": period.end.isoformat(),
        "trigger": "schedule" if closed_by == SCHEDULER else "manual", "closed_by": closed_by}
    if reason is not None:
        data["reason"] = reason
    return Event(type=EventType.RUN_CLOSED, source=source, subject=f"{customer}/{period.label}",
                 id=event_id(EventType.RUN_CLOSED, run_id), data=data)


def _existing(session: Session, customer: str, period: Period) -> RunClosed | None:
    """The run closed already for (customer, period), with its invoice number once issued. An
    invoice issued before billing runs were recorded counts as its run."""
    invoice = session.execute(select(Invoice.number, Invoice.run_id, Invoice.issued_at).where(
        Invoice.customer == customer, Invoice.period_start == period.start, Invoice.period_end == period.end,
        Invoice.number.is_not(None))).first()
    run = session.scalar(select(BillingRun).where(
        BillingRun.customer == customer, BillingRun.period_start == period.start,
        BillingRun.period_end == period.end))
    if run is not None:
        return RunClosed(False, run.id, customer, period, run.closed_by, run.closed_at, run.reason,
                         invoice_number=invoice.number if invoice else None)
    if invoice is not None:
        return RunClosed(False, invoice.run_id, customer, period, "unknown", invoice.issued_at, None,
                         invoice_number=invoice.number)
    return None


def billing_since(session: Session, customer: Customer, zone: ZoneInfo) -> date | None:
    """The first day the scheduler bills ``customer`` from: its ``billing_starts``; without one,
    the earlier of its first run's start and the local day of its earliest unbilled rated call;
    ``None`` (only the latest closable period) if it has neither. Periods from there that have
    a run already are skipped by the caller (``closed_periods``), so a period an operator closed
    by hand, ahead of time or out of order, never hides an earlier one."""
    return billing_since_each(session, [customer], zone)[customer.code]


def billing_since_each(session: Session, customers: Sequence[Customer], zone: ZoneInfo) -> dict[str, date | None]:
    """``billing_since`` of each customer, with two grouped queries for all of them."""
    codes = [c.code for c in customers if c.billing_starts is None]
    first_runs = dict(session.execute(select(BillingRun.customer, func.min(BillingRun.period_start))
                                      .where(BillingRun.customer.in_(codes)).group_by(BillingRun.customer)).all())
    first_calls = dict(session.execute(
        select(Call.customer, func.min(Call.start))
        .where(Call.customer.in_(codes), Call.status == "rated", Call.invoice_id.is_(None))
        .group_by(Call.customer)).all()) if codes else {}
    since: dict[str, date | None] = {}
    for customer in customers:
        if customer.billing_starts is not None:
            since[customer.code] = customer.billing_starts
            continue
        first_call = first_calls.get(customer.code)
        if first_call is not None:
            first_call = (first_call if first_call.tzinfo else first_call.replace(tzinfo=UTC)).astimezone(zone).date()
        known = [d for d in (first_runs.get(customer.code), first_call) if d is not None]
        since[customer.code] = min(known) if known else None
    return since


def closed_periods(session: Session, customer: str) -> set[Period]:
    """The periods of ``customer`` that have a billing run."""
    return closed_periods_each(session, [customer])[customer]


def closed_periods_each(session: Session, customers: Sequence[str]) -> dict[str, set[Period]]:
    """The periods of each customer that have a billing run, with one query for all of them."""
    closed: dict[str, set[Period]] = {code: set() for code in customers}
    for code, start, end in session.execute(select(BillingRun.customer, BillingRun.period_start, BillingRun.period_end)
                                            .where(BillingRun.customer.in_(list(customers)))):
        closed[code].add(Period(start, end))
    return closed
