"""Reading a carrier's file as text: decompression, encoding and line endings, in blocks of whole lines.

Everything downstream sees UTF-8 bytes with LF line endings, cut at line boundaries, each
block knowing the file line number of its first line. Memory stays flat: a block is a few
megabytes whatever the file's size.

- ``.gz``, ``.bz2`` and ``.zip`` are recognised by their magic bytes, not by name; a zip's
  members are read one after another (each member is a part of the file with its own
  header, when the format has one) and line numbers run on across members, so ``(file, row)``
  stays unique.
- Encoding: a UTF-8 BOM is dropped; a block that is not valid UTF-8 is decoded line by line,
  each bad line as cp1252 (latin-1 for the five bytes cp1252 leaves undefined), so no byte is
  lost and no file fails for one stray byte.
- A NUL byte means the file is binary, not text: ``BadFileError``.
"""

from __future__ import annotations

import bz2
import gzip
import io
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from cdrflow.errors import BadFileError

BOM = b"\xef\xbb\xbf"
MAX_DECOMPRESSED = 20 * 1024**3
"""A compressed file that inflates beyond this (bytes) is refused as a likely zip bomb."""


@dataclass(frozen=True, slots=True)
class Block:
    """Whole lines of text: UTF-8, LF-terminated. ``first_line`` is the 1-based file line of the first."""

    first_line: int
    data: bytes
    lines: int = field(init=False)  # counted once: a block is megabytes, and callers ask often

    def __post_init__(self) -> None:
        object.__setattr__(self, "lines", self.data.count(b"\n"))


@dataclass(frozen=True, slots=True)
class Member:
    """One part of a file: the file itself, or one member of a zip archive."""

    name: str
    stream: BinaryIO


def members(stream: BinaryIO, name: str, *, max_bytes: int = MAX_DECOMPRESSED) -> Iterator[Member]:
    """The file's readable parts, decompressed transparently."""
    stream = _peekable(stream)
    magic = stream.peek(4)[:4]
    if magic[:2] == b"\x1f\x8b":
        yield Member(name, _Limited(gzip.GzipFile(fileobj=stream), name, max_bytes))
    elif magic[:3] == b"BZh":
        yield Member(name, _Limited(bz2.BZ2File(stream), name, max_bytes))
    elif magic == b"PK\x03\x04" or magic == b"PK\x05\x06":
        yield from _zip_members(stream, name, max_bytes)
    else:
        yield Member(name, stream)


def _peekable(stream: BinaryIO) -> io.BufferedReader:
    if isinstance(stream, io.BufferedReader):
        return stream
    return io.BufferedReader(stream) if isinstance(stream, io.RawIOBase) else io.BufferedReader(_RawAdapter(stream))


class _RawAdapter(io.RawIOBase):
    """Lets any object with ``read`` be wrapped in a BufferedReader (for ``peek``)."""

    def __init__(self, inner: BinaryIO) -> None:
        self.inner = inner

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return bool(getattr(self.inner, "seekable", lambda: False)())

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.inner.seek(offset, whence)

    def tell(self) -> int:
        return self.inner.tell()

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        data = self.inner.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _zip_members(stream: io.BufferedReader, name: str, max_bytes: int) -> Iterator[Member]:
    if not stream.seekable():
        spool = tempfile.SpooledTemporaryFile(max_size=64 * 1024**2)
        shutil.copyfileobj(stream, spool)
        spool.seek(0)
        stream = spool  # type: ignore[assignment]
    try:
        archive = zipfile.ZipFile(stream)
        infos = [i for i in archive.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise BadFileError(f"not a readable zip archive ({exc})", file=name) from exc
    if not infos:
        raise BadFileError("zip archive has no files in it", file=name)
    for info in infos:
        if info.flag_bits & 0x1:
            raise BadFileError(f"zip member {info.filename!r} is encrypted", file=name)
        try:
            fh = archive.open(info)
        except (zipfile.BadZipFile, NotImplementedError, OSError) as exc:
            raise BadFileError(f"zip member {info.filename!r} can't be read ({exc})", file=name) from exc
        yield Member(f"{name}:{info.filename}", _Limited(fh, f"{name}:{info.filename}", max_bytes))


class _Limited(io.RawIOBase):
    """Counts decompressed bytes, refuses more than ``limit``, and turns codec errors into BadFileError."""

    def __init__(self, inner: BinaryIO, name: str, limit: int) -> None:
        self.inner, self.name, self.limit, self.count = inner, name, limit, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            data = self.inner.read(size)
        except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as exc:
            raise BadFileError(f"compressed data is damaged or truncated ({exc})", file=self.name) from exc
        self.count += len(data)
        if self.count > self.limit:
            raise BadFileError(f"decompresses to more than {self.limit} bytes: refused as a likely zip bomb",
                               file=self.name)
        return data


class TextSource:
    """One member's lines, as header lines (``readline``) and then blocks of whole lines."""

    def __init__(self, member: Member, first_line: int = 1, block_bytes: int = 8 * 1024**2) -> None:
        self.member, self.block_bytes = member, block_bytes
        self.next_line = first_line  # file line number of the next line handed out
        self._pending = b""
        self._eof = False
        self._started = False

    def _fill(self, want: int) -> None:
        while not self._eof and len(self._pending) < want:
            chunk = self.member.stream.read(max(want - len(self._pending), 64 * 1024))
            if not chunk:
                self._eof = True
                if self._pending and not self._pending.endswith((b"\n", b"\r")):
                    # end the last line the way the others end: an LF in a file of lone CRs would
                    # make its CRs look like text
                    old_mac = b"\r" in self._pending and b"\n" not in self._pending
                    self._pending += b"\r" if old_mac else b"\n"
                break
            if not self._started:
                self._started = True
                if chunk.startswith(BOM):
                    chunk = chunk[3:]
                if chunk.startswith((b"\xff\xfe", b"\xfe\xff")):
                    raise BadFileError("line 1: file is UTF-16 text: save it as UTF-8 or cp1252", file=self.member.name)
            if b"\x00" in chunk:
                raise BadFileError("not a text file (contains NUL bytes): is this the right file?", file=self.member.name)
            self._pending += chunk

    def readline(self) -> tuple[int, str] | None:
        """The next line (without its end) and its line number; None at the end."""
        self._fill(64 * 1024)
        while True:
            cut = _line_end(self._pending, first=True)
            if cut >= 0 or self._eof:
                break
            self._fill(len(self._pending) * 2)
        if not self._pending:
            return None
        if cut < 0:
            cut = len(self._pending) - 1
        raw, self._pending = self._pending[: cut + 1], self._pending[cut + 1 :]
        number, self.next_line = self.next_line, self.next_line + 1
        return number, _decode(_lf(raw)).rstrip("\n")

    def blocks(self) -> Iterator[Block]:
        """The remaining lines in blocks of about ``block_bytes`` (which the caller may tune between blocks)."""
        while True:
            self._fill(self.block_bytes)
            if not self._pending:
                return
            cut = _line_end(self._pending, first=False)
            if cut < 0 and not self._eof:
                self._fill(len(self._pending) * 2)  # a very long line: read on until it ends
                continue
            if cut < 0:
                cut = len(self._pending) - 1
            raw, self._pending = self._pending[: cut + 1], self._pending[cut + 1 :]
            data = _to_utf8(_lf(raw))
            block = Block(self.next_line, data)
            self.next_line += block.lines
            yield block


def _line_end(data: bytes, *, first: bool) -> int:
    """Index of the last byte of the first (or last) line end: LF, CRLF or a lone CR (the
    first line may end in any of them; blocks are cut at the last LF when there is one,
    and their lone CRs become line ends on the way, see ``_lf``)."""
    if first:
        ends = [c for c in (data.find(b"\n"), data.find(b"\r")) if c >= 0]
        cut = min(ends, default=-1)
        if cut < 0 or data[cut] == 0x0A:
            return cut
        if cut == len(data) - 1:
            return -1  # a CR at the very end may be half of a CRLF
        return cut + 1 if data[cut + 1] == 0x0A else cut
    cut = data.rfind(b"\n")
    if cut >= 0 or b"\r" not in data:
        return cut
    cut = data.rfind(b"\r")
    return cut if cut < len(data) - 1 else -1  # a CR at the very end may be half of a CRLF


def _lf(raw: bytes) -> bytes:
    if b"\r" not in raw:
        return raw
    raw = raw.replace(b"\r\n", b"\n")
    return raw.replace(b"\r", b"\n")  # old Mac line ends: a lone CR ends a line too


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        try:
            return raw.decode("cp1252")
        except UnicodeDecodeError:
            return raw.decode("latin-1")


def _to_utf8(data: bytes) -> bytes:
    """UTF-8 as is; otherwise each line that is not UTF-8 is decoded as cp1252 and re-encoded."""
    if data.isascii():  # most carrier files: ten times quicker to check than decoding
        return data
    try:
        data.decode("utf-8")
        return data
    except UnicodeDecodeError:
        return b"".join(_decode(line).encode("utf-8") for line in data.splitlines(keepends=True))
