"""The scheduler service: every ``scheduler_interval_seconds``, close each customer's billing
periods that have ended plus the grace for late files (``billing_grace_hours``), and publish
the run-closed events through its own outbox relay (publisher ``scheduler``).

Exactly once per (customer, period), whatever runs: ``runs.close_run`` inserts the run only if
its unique key is absent, in the same transaction as the event, so a second scheduler, a
restart, or an operator's ``cdrflow bill`` at the same moment makes nothing new. A scheduler
killed after the commit and before publishing leaves the event in the outbox; the relay sends
it after the restart (at-least-once, same event id; the invoicer issues once per run)."""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from cdrflow.bus.outbox import OutboxRelay, RelayThread
from cdrflow.db.models import Customer
from cdrflow.errors import CdrflowError
from cdrflow.log import get_logger
from cdrflow.runtime import Runtime
from cdrflow.stopping import exit_if_not_stopped_in
from services.invoicer.periods import closable_periods
from services.scheduler.runs import SCHEDULER, RunClosed, billing_since_each, closed_periods_each, open_runs, schedule_of

log = get_logger(__name__)

TICK_CUSTOMERS = 200
"""Customers closed in one transaction of a tick."""


@dataclass(frozen=True)
class Tick:
    """What one pass closed, and the customers it could not close (with why)."""

    closed: tuple[RunClosed, ...]
    failed: tuple[tuple[str, str], ...]  # (customer, error)


class Scheduler:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        s = runtime.settings
        self.zone = s.zone
        self.grace = timedelta(hours=s.billing_grace_hours)

    def tick(self, now: datetime) -> Tick:
        """Close every customer's closable periods at ``now``, oldest first; one transaction per
        ``TICK_CUSTOMERS`` customers, with a few statements for all of them. A group that fails
        (a customer's bad schedule) is closed again one customer per transaction, so one
        customer's mistake never holds up the others."""
        with self.runtime.database.transaction() as session:
            codes = list(session.scalars(select(Customer.code).order_by(Customer.code)))
        closed: list[RunClosed] = []
        failed: list[tuple[str, str]] = []
        for first in range(0, len(codes), TICK_CUSTOMERS):
            group = codes[first:first + TICK_CUSTOMERS]
            try:
                closed.extend(self._close_customers(group, now))
                continue
            except CdrflowError:
                pass  # which customer: each alone, below
            for code in group:
                try:
                    closed.extend(self._close_customers([code], now))
                except CdrflowError as exc:
                    log.error("billing_run_not_closed", customer=code, error=str(exc))
                    failed.append((code, str(exc)))
        return Tick(tuple(closed), tuple(failed))

    def _close_customers(self, codes: list[str], now: datetime) -> list[RunClosed]:
        s = self.runtime.settings
        with self.runtime.database.transaction() as session:
            customers = list(session.scalars(select(Customer).where(Customer.code.in_(codes))
                                             .order_by(Customer.code)))  # one removed since the list was read: gone
            since = billing_since_each(session, customers, self.zone)
            closed = closed_periods_each(session, [c.code for c in customers])
            wanted = [(c.code, period) for c in customers
                      for period in closable_periods(schedule_of(c), since[c.code], now, self.zone, self.grace)
                      if period not in closed[c.code]]
            made = [run for run in open_runs(session, wanted, closed_by=SCHEDULER, reason=None,
                                             source=self.runtime.source, publisher=SCHEDULER,
                                             namespace=s.namespace, now=now) if run.created]
        for run in made:  # logged once committed: a rolled-back pass closed nothing
            log.info("billing_run_closed", customer=run.customer, period=run.period.label, run_id=run.run_id,
                     closed_by=SCHEDULER)
        return made

    def run(self, stop: threading.Event, relay: RelayThread) -> None:
        interval = self.runtime.settings.scheduler_interval_seconds
        log.info("scheduler_started", interval_s=interval, grace_h=self.grace.total_seconds() / 3600)
        while not stop.is_set():
            try:
                if self.tick(datetime.now(UTC)).closed:
                    relay.wake()
            except CdrflowError as exc:  # the database away: try again next time
                log.error("scheduler_tick_failed", error=str(exc))
            stop.wait(interval)
        log.info("scheduler_stopped")


def serve(runtime: Runtime) -> None:
    """Run until SIGTERM or Ctrl-C. A tick cut short rolls back its customer's transaction;
    the next start closes that customer's periods again from the database's state."""
    stop = threading.Event()

    def request_stop(*_: object) -> None:
        exit_if_not_stopped_in()
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    relay = RelayThread(OutboxRelay(runtime.database, lambda: runtime.producer, publisher=SCHEDULER))
    relay.start()
    try:
        Scheduler(runtime).run(stop, relay)
    finally:
        relay.stop(timeout=2)
