"""A large plain file cut into parts of whole lines, so parser instances share it.

``plan_parts`` cuts a file into byte ranges of about ``part_bytes``, each ending just after a
line end, each knowing the file line number of its first line (so rows keep their numbers, and
``(file_id, row)`` stays the call's identity whichever instance read it). The plan depends only
on the bytes and ``part_bytes``: planned again after a crash, it is the same plan.

Only a file that can be cut this way is: uncompressed (a gzip, bzip2 or zip stream can only be
read from its start), with LF or CRLF line ends (a lone CR ends a line too, and counting those
at a cut would need the bytes read as text), larger than one part. Others are parsed whole, as
before. A format's header is read from the file's start by every part (``Window`` of the head).

What a part can't know, the file's last part decides once every part is in (services/parser/
service.py): the share of rejected rows, and whether the file held any record at all. Blank
lines in a row are counted per part, so a run of blank lines across a cut is counted in two.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import BinaryIO

COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"PK\x03\x04", b"PK\x05\x06")
SCAN_BYTES = 1024 * 1024
"""How far past a cut the next line end is looked for at a time."""


@dataclass(frozen=True)
class FilePart:
    """Bytes ``[start, end)`` of the file: ``lines`` lines, the first of them line ``first_line``."""

    index: int
    start: int
    end: int
    first_line: int
    lines: int

    @property
    def line_range(self) -> range:
        return range(self.first_line, self.first_line + self.lines)

    def to_event(self) -> dict[str, int]:
        return {"part": self.index, "start": self.start, "end": self.end, "first_line": self.first_line,
                "lines": self.lines}

    @classmethod
    def from_event(cls, data: dict) -> FilePart:
        return cls(int(data["part"]), int(data["start"]), int(data["end"]), int(data["first_line"]),
                   int(data["lines"]))


def plan_parts(fh: BinaryIO, size: int, part_bytes: int) -> list[FilePart] | None:
    """The file's parts, or None when it is parsed whole (small, compressed, or lone-CR line ends)."""
    if part_bytes < 1 or size <= part_bytes:
        return None
    fh.seek(0)
    if fh.read(4).startswith(COMPRESSED_MAGIC):
        return None
    cuts = [0]
    while (at := _line_end_after(fh, cuts[-1] + part_bytes, size)) < size:
        cuts.append(at)
    if len(cuts) == 1:
        return None  # one very long stretch without a line end: nothing to share
    cuts.append(size)
    parts, line = [], 1
    fh.seek(0)
    for index, (start, end) in enumerate(zip(cuts, cuts[1:])):
        data = fh.read(end - start)
        if data.count(b"\r") != data.count(b"\r\n"):
            return None  # a lone CR is a line end the count below would miss
        lines = data.count(b"\n") + (not data.endswith(b"\n"))  # the file's last line may have no LF
        parts.append(FilePart(index, start, end, line, lines))
        line += lines
    return parts


def _line_end_after(fh: BinaryIO, at: int, size: int) -> int:
    """The offset just after the first LF at or after ``at`` (``size`` if none)."""
    while at < size:
        fh.seek(at)
        chunk = fh.read(SCAN_BYTES)
        if (found := chunk.find(b"\n")) >= 0:
            return at + found + 1
        at += len(chunk)
    return size


class Window(io.RawIOBase):
    """Bytes ``[start, end)`` of a seekable binary file, as a stream of their own."""

    def __init__(self, inner: BinaryIO, start: int, end: int) -> None:
        self.inner, self.position, self.end = inner, start, end

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        want = min(len(buffer), self.end - self.position)
        if want <= 0:
            return 0
        self.inner.seek(self.position)
        data = self.inner.read(want)
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)


def window(fh: BinaryIO, start: int, end: int) -> io.BufferedReader:
    return io.BufferedReader(Window(fh, start, end), buffer_size=1024 * 1024)
