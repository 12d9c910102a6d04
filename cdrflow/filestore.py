"""Content-addressed store of every file ever received.

A file's address is the SHA-256 of its bytes. Writes are atomic (temp file in
the store, fsync, rename, fsync of the directory), so a crash leaves either
the whole file or nothing, and any file can be read back byte for byte to be
re-parsed or to trace an invoice to its source.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cdrflow.errors import BadFileError, FileStoreError

CHUNK = 1 << 20


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

    def _begin(self) -> _Writer:
        try:
            (self.root / "tmp").mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root / "tmp", prefix="incoming-")
        except OSError as exc:
            raise FileStoreError(f"file store at {self.root} is not writable: {exc}") from exc
        return _Writer(self, os.fdopen(fd, "wb"), Path(tmp))


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
        if self._size == 0:
            raise BadFileError("file is empty (0 bytes)")
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            stored = StoredFile(self._hash.hexdigest(), self._size)
            final = self._store.path_of(stored.fingerprint)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._tmp, final)
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
