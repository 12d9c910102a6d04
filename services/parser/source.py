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
- Bounded work (``ParseLimits``, when the caller passes them): a compressed file inflating past
  ``max_decompressed_bytes`` (all members together), more than ``max_lines`` lines or more than
  ``max_blank_run`` blank lines in a row fails with ``BadFileError``. A line longer than
  ``max_line_bytes`` that does not fit in a block is read past without being kept whole: it
  becomes a block of its own with a ``LongLine`` (its number, length and start), which the
  engine rejects as a row. Blank lines are counted in bulk (``bytes.count``/``find``), never
  one by one, so a file of a billion newlines fails in the time it takes to read the first
  ``max_blank_run`` of them.
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
from services.parser.limits import DEFAULT_LIMITS, RAW_MAX_CHARS, ParseLimits

BOM = b"\xef\xbb\xbf"
MAX_DECOMPRESSED = DEFAULT_LIMITS.max_decompressed_bytes
"""A compressed file that inflates beyond this (bytes, all members together) is refused as a likely zip bomb."""
LONG_LINE_HEAD = 4 * RAW_MAX_CHARS
"""Bytes kept of a line too long to hold (enough for ``RAW_MAX_CHARS`` characters of UTF-8)."""


@dataclass(frozen=True, slots=True)
class LongLine:
    """A line longer than ``max_line_bytes``: its 1-based number, its length in bytes (without
    its line end) and its first characters (for the rejection's ``raw``)."""

    row: int
    length: int
    head: str


@dataclass(frozen=True, slots=True)
class Block:
    """Whole lines of text: UTF-8, LF-terminated. ``first_line`` is the 1-based file line of the first."""

    first_line: int
    data: bytes
    long_line: LongLine | None = None  # set: the block is this one line, too long to hold (data is b"\n")
    lines: int = field(init=False)  # counted once: a block is megabytes, and callers ask often

    def __post_init__(self) -> None:
        object.__setattr__(self, "lines", self.data.count(b"\n"))


@dataclass(frozen=True, slots=True)
class Member:
    """One part of a file: the file itself, or one member of a zip archive."""

    name: str
    stream: BinaryIO


def members(stream: BinaryIO, name: str, *, max_bytes: int = MAX_DECOMPRESSED) -> Iterator[Member]:
    """The file's readable parts, decompressed transparently; ``max_bytes`` bounds what all the
    parts of a compressed file together may inflate to."""
    stream = _peekable(stream)
    magic = stream.peek(4)[:4]
    budget = _Budget(max_bytes)
    if magic[:2] == b"\x1f\x8b":
        yield Member(name, _Limited(gzip.GzipFile(fileobj=stream), name, budget))
    elif magic[:3] == b"BZh":
        yield Member(name, _Limited(bz2.BZ2File(stream), name, budget))
    elif magic == b"PK\x03\x04" or magic == b"PK\x05\x06":
        yield from _zip_members(stream, name, budget)
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


def _zip_members(stream: io.BufferedReader, name: str, budget: _Budget) -> Iterator[Member]:
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
    declared = sum(i.file_size for i in infos)
    if declared > budget.limit:  # the sizes may lie, so what is read is counted too (``_Limited``)
        raise BadFileError(f"zip archive says its files unpack to {declared:,} bytes, more than "
                           f"{size_text(budget.limit)} allowed: refused as a likely zip bomb", file=name)
    for info in infos:
        if info.flag_bits & 0x1:
            raise BadFileError(f"zip member {info.filename!r} is encrypted", file=name)
        try:
            fh = archive.open(info)
        except (zipfile.BadZipFile, NotImplementedError, OSError) as exc:
            raise BadFileError(f"zip member {info.filename!r} can't be read ({exc})", file=name) from exc
        yield Member(f"{name}:{info.filename}", _Limited(fh, f"{name}:{info.filename}", budget))


def size_text(n: int) -> str:
    """``4 GiB (4,294,967,296 bytes)`` or ``1,000 bytes``: a limit as an operator reads it."""
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size:,} {unit} ({n:,} bytes)"
    return f"{n:,} bytes"


class _Budget:
    """Decompressed bytes one file may still inflate to, shared by all its members."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    def take(self, n: int, member: str) -> None:
        self.used += n
        if self.used > self.limit:
            raise BadFileError(f"decompresses to more than {size_text(self.limit)}: "
                               f"refused as a likely zip bomb (a real file this large must be split)", file=member)


class _Limited(io.RawIOBase):
    """Counts decompressed bytes against the file's budget, and turns codec errors into BadFileError."""

    def __init__(self, inner: BinaryIO, name: str, budget: _Budget) -> None:
        self.inner, self.name, self.budget = inner, name, budget

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            data = self.inner.read(size)
        except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as exc:
            raise BadFileError(f"compressed data is damaged or truncated ({exc})", file=self.name) from exc
        self.budget.take(len(data), self.name)
        return data


class TextSource:
    """One member's lines, as header lines (``readline``) and then blocks of whole lines.

    With ``limits`` (the parser passes them; other readers, such as the duplicate comparison,
    want every line as it is) the file's lines, blank runs and line lengths are bounded; line
    numbers and blank runs carry on from ``first_line``/``blank_run`` (the previous member's).
    """

    def __init__(self, member: Member, first_line: int = 1, block_bytes: int = 8 * 1024**2,
                 limits: ParseLimits | None = None, blank_run: int = 0) -> None:
        self.member, self.block_bytes, self.limits = member, block_bytes, limits
        self.next_line = first_line  # file line number of the next line handed out
        self.blank_run = blank_run  # blank lines in a row just before ``next_line``
        self._run_start = first_line - blank_run
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

    def skip_blank_lines(self) -> None:
        """Drop the blank (or whitespace-only) lines before the next line with text, counting
        them in bulk: a file of nothing but newlines is read at the speed of ``bytes.count``,
        not line by line (``readline`` copies what it holds on every call)."""
        while True:
            self._fill(1024**2)
            if not self._pending:
                return
            rest = self._pending.lstrip(b" \t\r\n")
            gap = self._pending[: len(self._pending) - len(rest)]
            if rest or not self._eof:  # the last spaces may begin a line with text: keep them
                gap = gap[: max(gap.rfind(b"\n"), gap.rfind(b"\r")) + 1]
                if not rest and gap.endswith(b"\r"):
                    gap = gap[:-1]  # may be half of a CRLF: count it with the next read
            if gap:
                self._pending = self._pending[len(gap):]
                self._blank(gap.count(b"\n") + gap.count(b"\r") - gap.count(b"\r\n"))
            if rest or self._eof:
                return
            if not gap:  # one whitespace line longer than what is held: read on (readline bounds it)
                if self.limits and len(self._pending) > self.limits.max_line_bytes:
                    return
                self._fill(len(self._pending) * 2)

    def readline(self) -> tuple[int, str] | None:
        """The next line (without its end) and its line number; None at the end."""
        self._fill(64 * 1024)
        while True:
            cut = _line_end(self._pending, first=True)
            if cut >= 0 or self._eof:
                break
            self._too_long(len(self._pending))
            self._fill(len(self._pending) * 2)
        if not self._pending:
            return None
        if cut < 0:
            cut = len(self._pending) - 1
        raw, self._pending = self._pending[: cut + 1], self._pending[cut + 1 :]
        self._too_long(len(raw.rstrip(b"\r\n")))
        text = _decode(_lf(raw)).rstrip("\n")
        if text.strip():
            self.blank_run = 0
            number = self._advance(1)
        else:
            number = self.next_line
            self._blank(1)
        return number, text

    def blocks(self) -> Iterator[Block]:
        """The remaining lines in blocks of about ``block_bytes`` (which the caller may tune between blocks)."""
        while True:
            self._fill(self.block_bytes)
            if not self._pending:
                return
            cut = _line_end(self._pending, first=False)
            if cut < 0 and not self._eof:
                if self.limits is None:
                    self._fill(len(self._pending) * 2)  # a very long line: read on until it ends
                elif len(self._pending) > self.limits.max_line_bytes:
                    yield self._long_line()
                else:
                    self._fill(min(len(self._pending) * 2, self.limits.max_line_bytes + 1))
                continue
            if cut < 0:
                cut = len(self._pending) - 1
            raw, self._pending = self._pending[: cut + 1], self._pending[cut + 1 :]
            data = _to_utf8(_lf(raw))
            block = Block(self.next_line, data)
            if self.limits is not None:
                self._blank_runs(block)
            self._advance(block.lines)
            yield block

    # --- bounds (only with ``limits``) --------------------------------------------------

    def _too_long(self, length: int) -> None:
        """A header line (or one the format skips) that long fails the file: it can't be rejected as a row."""
        if self.limits is not None and length > self.limits.max_line_bytes:
            raise BadFileError(f"line {self.next_line:,}: longer than {size_text(self.limits.max_line_bytes)}, "
                               f"the most a line may be: not a line of a carrier's file", file=self.member.name)

    def _advance(self, lines: int) -> int:
        """Hand out ``lines`` lines; returns the number of the first. Checks the line limit."""
        first, self.next_line = self.next_line, self.next_line + lines
        if self.limits is not None and self.next_line - 1 > self.limits.max_lines:
            raise BadFileError(f"has more than {self.limits.max_lines:,} lines, the most a file may have: "
                               f"split it into smaller files", file=self.member.name)
        return first

    def _blank(self, count: int) -> None:
        """``count`` blank lines at ``next_line``, after which the run of blank lines may go on."""
        if not self.blank_run:
            self._run_start = self.next_line
        self.blank_run += count
        self._check_run()
        self._advance(count)

    def _check_run(self) -> None:
        if self.limits is not None and self.blank_run > self.limits.max_blank_run:
            raise BadFileError(f"line {self._run_start:,}: more than {self.limits.max_blank_run:,} blank lines in a "
                               f"row: not a file of call records (a file of newlines?)", file=self.member.name)

    def _blank_runs(self, block: Block) -> None:
        """Carry the run of blank lines through ``block`` (LF-only, starting at a line start) and
        fail on one too long. Cheap: one ``find`` of a run of newlines, and two short slices."""
        data, limit = block.data, self.limits.max_blank_run  # type: ignore[union-attr]
        if block.lines == len(data):  # nothing but newlines
            if not self.blank_run:
                self._run_start = block.first_line
            self.blank_run += len(data)
            self._check_run()
            return
        at = data.find(b"\n" * (limit + 2))  # a line end, then more than ``limit`` empty lines
        if at >= 0:
            self._run_start = block.first_line + data.count(b"\n", 0, at + 1)
            self.blank_run = limit + 1
            self._check_run()
        head = data[: limit + 1]
        leading = len(head) - len(head.lstrip(b"\n"))
        if leading:
            if not self.blank_run:
                self._run_start = block.first_line
            self.blank_run += leading
            self._check_run()
        tail = data[-(limit + 2):]
        trailing = len(tail) - len(tail.rstrip(b"\n")) - 1  # the last LF ends the last line with text
        self.blank_run = max(0, trailing)
        self._run_start = block.first_line + block.lines - self.blank_run

    def _long_line(self) -> Block:
        """The line at the start of what is held is longer than ``max_line_bytes``: read on to its
        end keeping only its start, so a 50 MB line costs no more memory than a short one."""
        head = self._pending[:LONG_LINE_HEAD]
        length = 0
        while True:
            cut = _line_end(self._pending, first=True)
            if cut >= 0:
                ending = 2 if cut and self._pending[cut - 1 : cut + 1] == b"\r\n" else 1
                length += cut + 1 - ending
                self._pending = self._pending[cut + 1 :]
                break
            if self._eof:
                length += len(self._pending.rstrip(b"\r\n"))
                self._pending = b""
                break
            keep = 1 if self._pending.endswith(b"\r") else 0  # may be half of a CRLF
            length += len(self._pending) - keep
            self._pending = self._pending[len(self._pending) - keep :]
            self._fill(len(self._pending) + 1024**2)
        number = self.next_line
        self.blank_run = 0
        self._advance(1)
        return Block(number, b"\n", long_line=LongLine(number, length, _decode_head(head)))


def _decode_head(head: bytes) -> str:
    """The start of a line cut at any byte: a UTF-8 character cut in two is dropped, not mis-read."""
    for trim in range(4):
        try:
            return head[: len(head) - trim].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return _decode(head)


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
