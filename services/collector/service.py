"""The collector service: every second, start a poll of each source that is due, each in its own
task, so one slow or broken source never holds up the others. A source's next poll time (the
poll interval, or its backoff after failures) lives in the database, so ``cdrflow collect``
and ``cdrflow sources add`` take effect without a restart."""

from __future__ import annotations

import asyncio
import signal
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from sqlalchemy import or_, select

from cdrflow.db.models import Source
from cdrflow.errors import CdrflowError, DatabaseError
from cdrflow.log import get_logger
from cdrflow.runtime import Runtime
from cdrflow.stopping import exit_if_not_stopped_in
from services.collector.poll import Collector
from services.collector.sources import missing_secret_key_error, unreadable_sources

log = get_logger(__name__)

TICK = 1.0  # seconds between looks for due sources
CONCURRENT_POLLS = 8


class CollectorService:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.collector = Collector(runtime)
        self._slots = asyncio.Semaphore(CONCURRENT_POLLS)
        self._polls: dict[str, asyncio.Task[None]] = {}

    def _due(self) -> list[str]:
        now = datetime.now(UTC)
        with self.runtime.database.transaction() as session:
            return list(session.scalars(
                select(Source.name).where(Source.enabled.is_(True))
                .where(or_(Source.next_poll_at.is_(None), Source.next_poll_at <= now)).order_by(Source.name)))

    async def _poll(self, name: str) -> None:
        async with self._slots:
            try:
                await self.collector.poll(name)
            except CdrflowError as exc:
                log.error("poll_failed", source=name, error=str(exc))
            except Exception:  # a bug in one source's poll must not stop the others
                log.exception("poll_crashed", source=name)

    async def run(self, stop: asyncio.Event) -> None:
        log.info("collector_started")
        while not stop.is_set():
            try:
                due = await asyncio.to_thread(self._due)
            except CdrflowError as exc:
                log.error("collector_database_unavailable", error=str(exc))
                due = []
            for name in due:
                if name not in self._polls:
                    self._polls[name] = asyncio.create_task(self._poll(name))
                    self._polls[name].add_done_callback(lambda _t, n=name: self._polls.pop(n, None))
            try:
                await asyncio.wait_for(stop.wait(), TICK)
            except TimeoutError:
                pass
        for task in list(self._polls.values()):
            task.cancel()
        await asyncio.gather(*self._polls.values(), return_exceptions=True)
        log.info("collector_stopped")


def check_secret_key(runtime: Runtime) -> None:
    """Refuse to start without CDRFLOW_SECRET_KEY while sources have credentials saved with one
    (no source could be polled, and a new key would not help); with a key that can't decrypt a
    source's credentials, say so for that source now (its polls fail with the same error). A
    database that is away at start-up skips the check: the service waits for it, as for polls."""
    try:
        with runtime.database.transaction() as session:
            unreadable = unreadable_sources(session, runtime.settings.secret_key)
    except DatabaseError as exc:
        log.warning("secret_key_check_skipped", error=str(exc))
        return
    if unreadable and not runtime.settings.secret_key:
        error = missing_secret_key_error(list(unreadable))
        log.error("collector_not_started", error=str(error))
        raise error
    for name, exc in unreadable.items():
        log.error("source_credentials_unreadable", source=name, error=str(exc))


def serve(runtime: Runtime) -> None:
    """Run until SIGTERM or Ctrl-C; a poll in progress is cancelled (its partial download removed)."""
    check_secret_key(runtime)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # FTP transfers and database calls run in worker threads; a pool larger than the number of
        # concurrent polls means sources stuck until their timeout can't starve the others of threads.
        loop.set_default_executor(ThreadPoolExecutor(max_workers=2 * CONCURRENT_POLLS + 4,
                                                     thread_name_prefix="collector"))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: (exit_if_not_stopped_in(), stop.set()))
        await CollectorService(runtime).run(stop)

    asyncio.run(main())
