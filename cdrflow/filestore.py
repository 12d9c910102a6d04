"""Content-addressed store of every file ever received.

A file's address is the SHA-256 of its bytes. Writes are atomic (temp file in
the store, fsync, rename, fsync of the directory), so a crash leaves either
the whole file or nothing, and any file can be read back byte for byte to be
re-parsed or to trace an invoice to its source.

A temp file is named ``incoming-<pid>-<random>`` after the process writing it, so
one left by a writer killed mid-file (kill -9 mid-upload) can be told from one
still being written: ``FileStore.sweep_temporary`` removes the former.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import AsyncIterable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cdrflow.errors import BadFileError, FileStoreError

CHUNK = 1 << 20
TEMP_PREFIX = "incoming-"
TEMP_MAX_AGE_S = 24 * 3600
"""A temp file untouched this long is abandoned whoever its pid names: the pid may have been
reused by another process, or the store may be shared by writers on other hosts."""


@dataclass(frozen=True)
class StoredFile:
    fingerprint: str  # hex SHA-256 of the content
    size: int  # bytes


class FileStore:
    """A local directory laid out as ``ab/cd/<sha256>``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_of(self, fingerprint: str) -> Path:
        if len(fingerprint) != 64 or any(c not in "0123456789abcdef" for c in fingerprint):
            raise FileStoreError(f"not a SHA-256 fingerprint: {fingerprint!r}")
        return self.root / fingerprint[:2] / fingerprint[2:4] / fingerprint

    def exists(self, fingerprint: str) -> bool:
        return self.path_of(fingerprint).exists()

    def open(self, fingerprint: str) -> BinaryIO:
        try:
            return self.path_of(fingerprint).open("rb")
        except OSError as exc:
            raise FileStoreError(f"stored file {fingerprint} can't be read: {exc}") from exc

    def read_bytes(self, fingerprint: str) -> bytes:
        with self.open(fingerprint) as fh:
            return fh.read()

    def put_bytes(self, data: bytes) -> StoredFile:
        return self.put_chunks([data])

    def put_many(self, contents: Sequence[bytes]) -> list[StoredFile]:
        """Store each content, in order, as ``put_bytes`` would, with two ``sync`` calls for
        all of them instead of two fsyncs each: every file written to its temporary name,
        then one sync (their bytes are on disk), every one renamed into place, then one
        sync (their names are). Same guarantee: an address appears only once its content is
        complete and durable. A billing run stores its calls CSVs this way, a few hundred
        at a time; one fsync'd file is about 2–4 ms here, so ten thousand would take 30 s."""
        if len(contents) <= 1:
            return [self.put_bytes(data) for data in contents]
        writers = [self._begin() for _ in contents]
        try:
            for writer, data in zip(writers, contents, strict=True):
                writer.write(data)
                writer.close_data(durable=False)
            self._sync()
            stored = [writer.place(durable=False) for writer in writers]
            self._sync()
            return stored
        finally:
            for writer in writers:
                writer.abort()

    def _sync(self) -> None:
        """Everything written so far on disk (``sync(2)``: the store's file system among them)."""
        os.sync()

    def put_stream(self, stream: BinaryIO) -> StoredFile:
        return self.put_chunks(iter(lambda: stream.read(CHUNK), b""))

    def put_chunks(self, chunks: Iterable[bytes]) -> StoredFile:
        """Store content arriving in chunks, hashing as it is written (memory stays flat)."""
        writer = self._begin()
        try:
            for chunk in chunks:
                writer.write(chunk)
            return writer.finish()
        finally:
            writer.abort()

    async def put_async_chunks(self, chunks: AsyncIterable[bytes]) -> StoredFile:
        writer = self._begin()
        try:
            async for chunk in chunks:
                writer.write(chunk)
            return writer.finish()
        finally:
            writer.abort()

    def sweep_temporary(self, max_age_s: float = TEMP_MAX_AGE_S) -> int:
        """Remove temp files left by writers that died mid-file; returns how many were removed.

        A temp file goes when the process its name carries is no longer running on this host,
        or when it was last written more than ``max_age_s`` seconds ago (one named without a
        pid, by an older version, only then); a temp file of a running writer is kept. Safe
        to run while other processes write to the store."""
        removed = 0
        now = time.time()
        try:
            candidates = list((self.root / "tmp").glob(TEMP_PREFIX + "*"))
        except OSError as exc:
            raise FileStoreError(f"file store at {self.root} can't be listed: {exc}") from exc
        for path in candidates:
            try:
                stale = now - path.stat().st_mtime > max_age_s
                pid = _writer_pid(path.name)
                if stale or (pid is not None and not _is_running(pid)):
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue  # its writer finished (renamed it into place) or gave up meanwhile
            except OSError as exc:
                raise FileStoreError(f"file store at {self.root} can't remove {path.name}: {exc}") from exc
        return removed

    def _begin(self) -> _Writer:
        try:
            (self.root / "tmp").mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root / "tmp", prefix=f"{TEMP_PREFIX}{os.getpid()}-")
        except OSError as exc:
            raise FileStoreError(f"file store at {self.root} is not writable: {exc}") from exc
        return _Writer(self, os.fdopen(fd, "wb"), Path(tmp))


def _writer_pid(name: str) -> int | None:
    """The pid in ``incoming-<pid>-<random>``; None for a name without one (an older version's)."""
    pid, sep, _ = name.removeprefix(TEMP_PREFIX).partition("-")
    return int(pid) if sep and pid.isdigit() and int(pid) > 0 else None


def _is_running(pid: int) -> bool:
    """Whether a process with this pid exists on this host (signal 0 checks without signalling)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by another user
    except OverflowError:
        return False
    return True


class _Writer:
    """One file being written: hash and size accumulate as chunks arrive."""

    def __init__(self, store: FileStore, fh: BinaryIO, tmp: Path) -> None:
        self._store, self._fh, self._tmp = store, fh, tmp
        self._hash = hashlib.sha256()
        self._size = 0
        self._done = False

    def write(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self._size += len(chunk)
        self._fh.write(chunk)

    def finish(self) -> StoredFile:
        """fsync, then rename into place: the address is only visible once complete.

        An empty file is refused: a carrier file with no bytes is never a billing file."""
        self.close_data(durable=True)
        return self.place(durable=True)

    def close_data(self, *, durable: bool) -> None:
        """The content complete and closed (fsync'd if ``durable``; else the caller syncs)."""
        if self._size == 0:
            raise BadFileError("file is empty (0 bytes)")
        try:
            self._fh.flush()
            if durable:
                os.fsync(self._fh.fileno())
            self._fh.close()
        except OSError as exc:
            raise FileStoreError(f"file store at {self._store.root} failed to write: {exc}") from exc

    def place(self, *, durable: bool) -> StoredFile:
        """Rename the closed content to its address (its directory fsync'd if ``durable``)."""
        try:
            stored = StoredFile(self._hash.hexdigest(), self._size)
            final = self._store.path_of(stored.fingerprint)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._tmp, final)
            if durable:
                dir_fd = os.open(final.parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError as exc:
            raise FileStoreError(f"file store at {self._store.root} failed to write: {exc}") from exc
        self._done = True
        return stored

    def abort(self) -> None:
        if self._done:
            return
        self._fh.close()
        self._tmp.unlink(missing_ok=True)
