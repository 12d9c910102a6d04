"""Events a handler yields, held until its transaction commits.

Memory stays flat however many events one message causes (a million-call file is a
hundred batches, ~100 MB): past ``memory_bytes`` the spool continues in an anonymous temporary file.
Events come back out in the order they went in.
"""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Iterator
from typing import IO

_HEADER = struct.Struct(">III")  # topic, key, payload lengths


class Spool:
    def __init__(self, memory_bytes: int = 64 << 20) -> None:
        self.memory_bytes = memory_bytes
        self._memory: list[tuple[str, str, bytes]] = []
        self._held = 0
        self._disk: IO[bytes] | None = None
        self.count = 0

    def add(self, topic: str, key: str, payload: bytes) -> None:
        self.count += 1
        if self._disk is None and self._held + len(payload) <= self.memory_bytes:
            self._memory.append((topic, key, payload))
            self._held += len(payload)
            return
        if self._disk is None:
            self._disk = tempfile.TemporaryFile(prefix="cdrflow-spool-")
        t, k = topic.encode(), key.encode()
        self._disk.write(_HEADER.pack(len(t), len(k), len(payload)))
        self._disk.write(t + k + payload)

    def __iter__(self) -> Iterator[tuple[str, str, bytes]]:
        yield from self._memory
        if self._disk is None:
            return
        self._disk.flush()
        self._disk.seek(0)
        while header := self._disk.read(_HEADER.size):
            lt, lk, lp = _HEADER.unpack(header)
            body = self._disk.read(lt + lk + lp)
            yield body[:lt].decode(), body[lt:lt + lk].decode(), body[lt + lk:]

    def clear(self) -> None:
        """Drop everything held and start again empty (a handler's RETRACT)."""
        self.close()
        self._held = self.count = 0

    def close(self) -> None:
        self._memory.clear()
        if self._disk is not None:
            self._disk.close()
            self._disk = None
