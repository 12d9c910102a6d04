"""One poll of one source: list, let files settle, download, store, announce, remember.

The order of steps for each file, and why a crash at any point is safe:

1. download into ``<data_dir>/collector/tmp/<pid>-<uuid>.part`` and check the byte count against
   the listing (short → not stored, retried next poll);
2. store it in the content-addressed file store (temp + fsync + rename: whole or absent);
3. produce file-arrived and flush (acks=all), unless the content is byte for byte what was
   collected from this path before (the file was only touched): then step 3 is skipped. Its file id is derived from (source, path, size,
   mtime, fingerprint), so if we crash before step 4 and fetch the same file again, the repeat
   has the same file id and dedupe treats it as the same file, not a Potential Duplicate;
4. remember the remote file (path, size, mtime, fingerprint) in ``collected_files``;
5. delete it on the server if the source says so (a crash before this is repaired next poll).

A crash in 1 leaves a ``.part`` file of a dead process, removed at the start of the next poll.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from cdrflow.bus import Topic, topic_name
from cdrflow.db.models import CollectedFile, Source
from cdrflow.errors import CdrflowError, InputError
from cdrflow.events import Event, event_id
from cdrflow.intake import FileMetadata, file_arrived, safe_name
from cdrflow.log import get_logger
from cdrflow.runtime import Runtime
from services.collector.credentials import decrypt
from services.collector.errors import FileChangedError, RemoteFileError
from services.collector.remote import Endpoint, Remote, connect
from services.collector.rules import RemoteEntry, Rule, classify, directories, rules_from_dicts, settled, to_fetch

log = get_logger(__name__)


@dataclass
class PollResult:
    source: str
    fetched: list[dict[str, object]] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # still being written: size or mtime moved
    unchanged: list[str] = field(default_factory=list)  # touched but the same bytes: not announced again
    listed: int = 0  # files on the server that a rule of the source matches
    already_collected: list[str] = field(default_factory=list)  # collected before, unchanged since: not fetched
    error: str | None = None


def backoff_seconds(poll_interval: int, failures: int, cap: int) -> int:
    """Wait before retrying a source that failed ``failures`` times in a row: the poll interval,
    doubled per further failure, never more than ``cap`` (nor less than the poll interval)."""
    if failures <= 0:
        return poll_interval
    return min(poll_interval * 2 ** (failures - 1), max(cap, poll_interval))


def collected_file_id(source: str, entry: RemoteEntry, fingerprint: str) -> str:
    return event_id("collector", source, entry.path, entry.size, entry.mtime, fingerprint)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_parts(tmp_dir: Path) -> int:
    """Delete partial downloads left by collector processes that died mid-download."""
    removed = 0
    for part in tmp_dir.glob("*.part"):
        pid = part.name.split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            part.unlink(missing_ok=True)
            removed += 1
    return removed


@dataclass(frozen=True)
class SourcePlan:
    """A source as one poll needs it, read from the database once at the start of the poll."""

    endpoint: Endpoint
    carrier: str
    remote_dir: str
    rules: list[Rule]
    delete_after_collect: bool
    collected: dict[str, tuple[int, int]]  # path → (size, mtime) when last collected
    announced: dict[str, tuple[str, str]]  # path → (fingerprint, file id) of what was last collected from it


class Collector:
    """Polls sources for one process (the collector service or ``cdrflow collect --now``)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.tmp_dir = runtime.settings.data_dir / "collector" / "tmp"

    # --- database (sync; called in worker threads) ---

    def _plan(self, name: str) -> SourcePlan:
        with self.runtime.database.transaction() as session:
            src = session.get(Source, name)
            if src is None:
                raise InputError(f"no source {name!r}: add it with 'cdrflow sources add'")
            endpoint = Endpoint(src.name, src.protocol, src.host, src.port, src.username,
                                decrypt(src.secret, self.settings.secret_key, src.name), src.verify_tls, src.host_key,
                                self.settings.collector_timeout, src.tls_ca)
            rows = session.execute(select(CollectedFile.path, CollectedFile.size, CollectedFile.mtime,
                                          CollectedFile.fingerprint, CollectedFile.file_id).where(CollectedFile.source == name)).all()
            return SourcePlan(endpoint, src.carrier, src.remote_dir, rules_from_dicts(orjson.loads(src.rules)),
                              src.delete_after_collect, {r.path: (r.size, r.mtime) for r in rows},
                              {r.path: (r.fingerprint, r.file_id) for r in rows})

    def _remember(self, name: str, entry: RemoteEntry, fingerprint: str, file_id: str) -> None:
        row = CollectedFile(source=name, path=entry.path, size=entry.size, mtime=entry.mtime,
                            fingerprint=fingerprint, file_id=file_id, collected_at=datetime.now(UTC))
        try:
            with self.runtime.database.transaction() as session:
                session.merge(row)
        except IntegrityError:  # another poller of this source inserted it a moment ago
            with self.runtime.database.transaction() as session:
                session.merge(row)

    def _record_outcome(self, name: str, result: PollResult) -> None:
        now = datetime.now(UTC)
        with self.runtime.database.transaction() as session:
            src = session.get(Source, name)
            if src is None:
                return
            src.last_poll_at = now
            src.collected += len(result.fetched)
            if result.error is None:
                src.state, src.failures, src.last_error, src.last_success_at = "ok", 0, None, now
            else:
                src.state, src.failures, src.last_error = "failing", src.failures + 1, result.error
            wait = backoff_seconds(src.poll_interval, src.failures, self.settings.collector_max_backoff)
            src.next_poll_at = now + timedelta(seconds=wait)

    # --- the poll ---

    async def poll(self, name: str) -> PollResult:
        """Poll ``name`` once and record the outcome in its status. Remote and configuration
        errors become the source's error (and its backoff); they are not raised."""
        result = PollResult(name)
        try:
            plan = await asyncio.to_thread(self._plan, name)
            await self._poll(plan, result)
        except InputError:
            raise
        except CdrflowError as exc:
            result.error = str(exc)
            log.warning("source_failed", source=name, error=result.error, error_type=type(exc).__name__)
        await asyncio.to_thread(self._record_outcome, name, result)
        if result.error is None:
            log.info("source_polled", source=name, fetched=len(result.fetched), waiting=len(result.waiting))
        return result

    async def _poll(self, plan: SourcePlan, result: PollResult) -> None:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(remove_stale_parts, self.tmp_dir)
        remote = await connect(plan.endpoint)
        try:
            listing = await self._list(remote, plan)
            if plan.delete_after_collect:
                await self._delete_already_collected(remote, plan, listing)
            candidates = to_fetch(listing, plan.collected)
            result.listed = len(listing)
            result.already_collected = [e.path for e, _ in listing if plan.collected.get(e.path) == e.version]
            if candidates and self.settings.collector_settle_seconds > 0:
                await asyncio.sleep(self.settings.collector_settle_seconds)
                again = [entry for entry, _ in await self._list(remote, plan)]
                candidates, waiting = settled(candidates, again)
                result.waiting = [e.path for e in waiting]
            errors = []
            for entry, rule in candidates:
                try:
                    fetched = await self._fetch(remote, plan, entry, rule)
                except FileChangedError:
                    result.waiting.append(entry.path)
                    continue
                except RemoteFileError as exc:  # this file only; the others still come
                    errors.append(str(exc))
                    continue
                if fetched is None:
                    result.unchanged.append(entry.path)
                else:
                    result.fetched.append(fetched)
            if errors:
                result.error = "; ".join(errors[:3]) + (f" (and {len(errors) - 3} more)" if len(errors) > 3 else "")
        finally:
            await remote.close()

    async def _list(self, remote: Remote, plan: SourcePlan) -> list[tuple[RemoteEntry, Rule]]:
        listing = []
        for directory in directories(plan.rules, plan.remote_dir):
            entries = await remote.list_files(directory)
            listing.extend(classify(entries, directory, plan.rules, plan.remote_dir))
        return listing

    async def _delete_already_collected(self, remote: Remote, plan: SourcePlan,
                                        listing: list[tuple[RemoteEntry, Rule]]) -> None:
        """Files collected before a crash that came between remembering and deleting them."""
        for entry, _ in listing:
            if plan.collected.get(entry.path) == entry.version:
                await remote.delete(entry.path)

    async def _fetch(self, remote: Remote, plan: SourcePlan, entry: RemoteEntry,
                     rule: Rule) -> dict[str, object] | None:
        """Steps 1-5 of the module doc for one file; None when its bytes are those collected before."""
        source = plan.endpoint.source
        part = self.tmp_dir / f"{os.getpid()}-{uuid.uuid4().hex}.part"
        try:
            got = await remote.download(entry.path, part)
            if got > entry.size:
                raise FileChangedError(source, f"{entry.path} grew from {entry.size} to {got} bytes while being "
                                       "downloaded; it is fetched once it stops changing")
            if got < entry.size:
                raise RemoteFileError(source, f"download of {entry.path} came short: {got} of {entry.size} bytes "
                                      "(transfer cut or file truncated on the server); it is fetched again next poll")
            stored = await asyncio.to_thread(self._store, part)
        finally:
            part.unlink(missing_ok=True)
        before = plan.announced.get(entry.path)
        if before is not None and before[0] == stored.fingerprint:
            await asyncio.to_thread(self._remember, source, entry, stored.fingerprint, before[1])
            if plan.delete_after_collect:
                await remote.delete(entry.path)
            log.info("file_unchanged", source=source, fingerprint=stored.fingerprint, remote_path=entry.path)
            return None
        meta = FileMetadata(carrier=plan.carrier, kind=rule.kind, period=rule.period, direction=rule.direction,
                            original_name=safe_name(entry.name), channel="collector")
        details = {"source": source, "protocol": plan.endpoint.protocol, "host": plan.endpoint.host,
                   "remote_path": entry.path, "remote_mtime": entry.mtime, "rule": rule.spec()}
        event = file_arrived(stored, meta, self.runtime.source, details,
                             file_id=collected_file_id(source, entry, stored.fingerprint))
        await asyncio.to_thread(self._announce, stored.fingerprint, event)
        await asyncio.to_thread(self._remember, source, entry, stored.fingerprint, event.id)
        if plan.delete_after_collect:
            await remote.delete(entry.path)
        log.info("file_collected", source=source, file_id=event.id, fingerprint=stored.fingerprint,
                 remote_path=entry.path, size=stored.size, kind=rule.kind, period=rule.period)
        return {"file_id": event.id, "remote_path": entry.path, "size": stored.size, "kind": rule.kind,
                "period": rule.period, "direction": rule.direction}

    def _store(self, part: Path):  # type: ignore[no-untyped-def]
        with part.open("rb") as fh:
            return self.runtime.store.put_stream(fh)

    def _announce(self, key: str, event: Event) -> None:
        producer = self.runtime.producer
        producer.send(topic_name(self.settings.namespace, Topic.FILE_ARRIVED), key, event)
        producer.flush(timeout=30)
