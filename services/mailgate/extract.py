"""The billing files in one mail message (pure: bytes in, files out; no network, no database).

Attachments are taken as files; zip and gzip attachments are opened (also nested, a few levels),
forwarded messages (message/rfc822 parts, and ``.eml`` attachments as some mail programs forward
them) are walked like the message itself. Images, parts referenced
by Content-ID (inline graphics), S/MIME and PGP signatures and vCards are *ignored*, and say so:
they are never billing files. The body (text without a file name) is neither.

Limits protect the gateway: at most ``max_files`` files and ``max_unpacked`` bytes once
unpacked; past either, the whole message is refused with the reason (a zip bomb stops as soon as
its output passes the limit, whatever its headers claim). Unpacking reads in chunks; with
``keep=False`` (the check the gateway makes before answering 250) the files' bytes are counted
and dropped, so checking a message costs little memory however far it unpacks.
"""

from __future__ import annotations

import email
import email.errors
import email.policy
import gzip
import io
import posixpath
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from typing import BinaryIO

from cdrflow.errors import InputError

MAX_DEPTH = 4  # archives in archives, messages in messages
CHUNK = 1 << 20  # bytes read from an archive at a time
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".svg", ".ico", ".webp", ".tif", ".tiff", ".emz",
                    ".wmz"}
SIGNATURE_EXTENSIONS = {".p7s", ".p7m", ".asc", ".sig", ".vcf"}
SIGNATURE_TYPES = {"application/pkcs7-signature", "application/x-pkcs7-signature", "application/pgp-signature",
                   "text/vcard", "text/x-vcard"}
ZIP_TYPES = {"application/zip", "application/x-zip-compressed", "application/x-zip"}
GZIP_TYPES = {"application/gzip", "application/x-gzip"}
TNEF_TYPES = {"application/ms-tnef", "application/vnd.ms-tnef"}


class MessageRefused(InputError):
    """The message can't be taken as it stands; ``reply`` is the SMTP answer (code and reason)."""

    def __init__(self, code: int, enhanced: str, reason: str) -> None:
        self.code, self.enhanced, self.reason = code, enhanced, reason
        super().__init__(reason)

    @property
    def reply(self) -> str:
        return f"{self.code} {self.enhanced} {self.reason}"


@dataclass(frozen=True)
class Limits:
    max_files: int
    max_unpacked: int  # bytes


@dataclass(frozen=True)
class FoundFile:
    name: str  # the file's own name (last path component as sent; not yet made safe)
    data: bytes  # empty when extracted with keep=False
    position: str  # where in the message: "2", "2/gamma.csv" (zip member), "3.1" (forwarded): stable
    container: str | None  # the archive or forwarded message it came out of
    size: int  # bytes


@dataclass(frozen=True)
class IgnoredPart:
    name: str
    reason: str


@dataclass
class Extraction:
    files: list[FoundFile] = field(default_factory=list)
    ignored: list[IgnoredPart] = field(default_factory=list)
    unpacked: int = 0  # bytes decompressed so far
    keep: bool = True  # False: count the files' bytes, don't hold them


def parse_message(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(_mark_encoded_forwards(raw), policy=email.policy.default)  # type: ignore[return-value]


ENCODED_FORWARD = "application/x-cdrflow-encoded-rfc822"
"""What a message/rfc822 part sent base64 or quoted-printable is parsed as. Python's parser reads
any message/rfc822 part as a message, so the encoded text itself became the forwarded message
(headers re-folded, nothing found in it); under a type that is not message/* its payload is decoded like a file's."""

BASE64_DEFECTS = (email.errors.InvalidBase64PaddingDefect, email.errors.InvalidBase64CharactersDefect,
                  email.errors.InvalidBase64LengthDefect)

_FORWARD_TYPE = re.compile(rb"(?im)^(content-type:[ \t]*)message/rfc822")
_HEADERS_END = re.compile(rb"\r?\n\r?\n")
_ENCODED = re.compile(rb"(?im)^content-transfer-encoding:[ \t]*(base64|quoted-printable)[ \t]*\r?$")


def _mark_encoded_forwards(raw: bytes) -> bytes:
    """Give each message/rfc822 part whose own headers say base64 or quoted-printable the type
    ``ENCODED_FORWARD``; every other byte stays as it is (a 7bit or 8bit forward too, and a file's
    text that merely reads like such headers: only a header block opened by a boundary line counts)."""
    marked, at = [], 0
    for match in _FORWARD_TYPE.finditer(raw):
        blank = max(raw.rfind(b"\n\n", 0, match.start()), raw.rfind(b"\n\r\n", 0, match.start()))
        if raw.rfind(b"\n--", 0, match.start()) < blank:
            continue  # in a body, not in a part's headers
        end = _HEADERS_END.search(raw, match.end())
        if _ENCODED.search(raw, match.end(), end.start() if end else len(raw)):
            marked += [raw[at:match.start(1)], match[1], ENCODED_FORWARD.encode()]
            at = match.end()
    return b"".join(marked) + raw[at:] if marked else raw


def extract(raw: bytes, limits: Limits, keep: bool = True) -> Extraction:
    """Every billing file in the message and every part ignored; MessageRefused if over a limit or
    an archive is damaged (then nothing from the message is taken). ``keep=False``: the same
    answer, without the files' bytes."""
    found = Extraction(keep=keep)
    _walk(parse_message(raw), "", found, limits, 0)
    return found


def _ext(name: str) -> str:
    return posixpath.splitext(name.lower())[1]


def _is_container(name: str) -> bool:
    """Whether a file of this name is opened rather than taken (so its bytes are needed)."""
    return _ext(name) in (".zip", ".gz", ".gzip", ".eml")


def _walk(part: Message, position: str, found: Extraction, limits: Limits, depth: int) -> None:
    ctype = part.get_content_type()
    if ctype in ("message/rfc822", ENCODED_FORWARD):
        if depth >= MAX_DEPTH:
            raise MessageRefused(554, "5.6.0", f"messages forwarded more than {MAX_DEPTH} deep: refused")
        for i, msg in enumerate(_forwarded(part, position or "1"), start=1):
            _walk(msg, f"{position}.{i}" if position else str(i), found, limits, depth + 1)
        return
    if part.is_multipart():
        for i, sub in enumerate(part.get_payload(), start=1):  # type: ignore[union-attr]
            _walk(sub, f"{position}.{i}" if position else str(i), found, limits, depth)
        return
    _leaf(part, position or "1", found, limits, depth)


def _forwarded(part: Message, position: str) -> list[Message]:
    """The message(s) a message/rfc822 part holds."""
    if part.get_content_type() == ENCODED_FORWARD:  # base64 or quoted-printable: decode, then parse
        label = part.get_filename() or f"(forwarded message, part {position})"
        return [parse_message(_decoded(part, f"forwarded message {label}"))]
    inner = part.get_payload()
    return inner if isinstance(inner, list) else [inner]


def _decoded(part: Message, label: str) -> bytes:
    """A part's bytes, decoded from its transfer encoding; MessageRefused if its base64 is damaged
    (the parser would decode what it could and carry on: a file with bytes missing)."""
    data = part.get_payload(decode=True) or b""
    if damaged := [d for d in part.defects if isinstance(d, BASE64_DEFECTS)]:
        raise MessageRefused(554, "5.6.0", f"{label} can't be opened: its base64 encoding is damaged "
                             f"({type(damaged[0]).__name__}): nothing from this message was taken")
    return data


def _leaf(part: Message, position: str, found: Extraction, limits: Limits, depth: int) -> None:
    name = part.get_filename()
    ctype = part.get_content_type()
    label = name or f"({ctype} part {position})"
    ext = _ext(name or "")
    if ctype.startswith("image/") or ext in IMAGE_EXTENSIONS:
        found.ignored.append(IgnoredPart(label, "image (signature, logo or inline graphic): not a billing file"))
        return
    if part.get("Content-ID") and part.get_content_disposition() != "attachment":
        found.ignored.append(IgnoredPart(label, "inline part referenced by Content-ID: not a billing file"))
        return
    if ctype in SIGNATURE_TYPES or ext in SIGNATURE_EXTENSIONS:
        found.ignored.append(IgnoredPart(label, "signature or contact card: not a billing file"))
        return
    if ctype in TNEF_TYPES or (name or "").lower() == "winmail.dat":
        raise MessageRefused(554, "5.6.0", f"attachment {label} is Outlook's TNEF wrapping, whose files can't be read "
                             "here: nothing from this message was taken; send the files as plain attachments")
    if name is None:
        if not ctype.startswith("text/"):
            found.ignored.append(IgnoredPart(label, "part without a file name: not taken as a billing file"))
        return  # text without a file name is the message body
    data = _decoded(part, f"attachment {label}")
    _file(name, data, len(data), ctype, position, None, found, limits, depth)


def _file(name: str, data: bytes, size: int, ctype: str | None, position: str, container: str | None,
          found: Extraction, limits: Limits, depth: int) -> None:
    """One file as sent or unpacked (``size`` bytes; ``data`` may be empty when not kept)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    ext = _ext(base)
    if ext == ".zip" or ctype in ZIP_TYPES:
        _unzip(base, data, position, found, limits, depth)
    elif ext == ".eml":
        if depth >= MAX_DEPTH:
            raise MessageRefused(554, "5.6.0", f"messages forwarded more than {MAX_DEPTH} deep: refused")
        _walk(parse_message(data), position, found, limits, depth + 1)
    elif ext in (".gz", ".gzip") or ctype in GZIP_TYPES:
        inner = base[: -len(ext)] if ext in (".gz", ".gzip") else base
        content, unpacked = _gunzip(base, data, found.keep or _is_container(inner), found, limits)
        _file(inner, content, unpacked, None, position + "/" + inner, base, found, limits, depth + 1)
    elif size == 0:
        found.ignored.append(IgnoredPart(base, "empty (0 bytes): no billing data"))
    else:
        if len(found.files) >= limits.max_files:
            raise MessageRefused(552, "5.3.4", f"more than {limits.max_files} billing files in one message: "
                                 "refused; send them in several messages")
        found.files.append(FoundFile(base, data if found.keep else b"", position, container, size))


def _over(name: str, limits: Limits) -> MessageRefused:
    return MessageRefused(552, "5.3.4", f"attachment {name} unpacks to more than {limits.max_unpacked} bytes "
                          "(a zip bomb?): message refused")


def _damaged(name: str, why: str) -> MessageRefused:
    return MessageRefused(554, "5.6.0", f"attachment {name} can't be unpacked ({why}): nothing from this message "
                          "was taken; send an undamaged copy")


def _unzip(name: str, data: bytes, position: str, found: Extraction, limits: Limits, depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise MessageRefused(554, "5.6.0", f"archive {name} is nested more than {MAX_DEPTH} deep: refused")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise _damaged(name, f"not a readable zip file: {exc}") from exc
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            if info.flag_bits & 0x1:
                raise _damaged(name, f"{info.filename} is password-protected")
            if info.file_size > limits.max_unpacked - found.unpacked:
                raise _over(name, limits)
            try:
                with archive.open(info) as member:
                    content, size = _read(member, name, found.keep or _is_container(info.filename), found, limits)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
                raise _damaged(name, f"{info.filename}: {exc}") from exc
            _file(info.filename, content, size, None, f"{position}/{info.filename}", name, found, limits, depth + 1)


def _gunzip(name: str, data: bytes, keep: bool, found: Extraction, limits: Limits) -> tuple[bytes, int]:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as fh:
            return _read(fh, name, keep, found, limits)
    except (OSError, EOFError, zlib.error) as exc:
        raise _damaged(name, f"not a readable gzip file: {exc}") from exc


def _read(stream: BinaryIO, name: str, keep: bool, found: Extraction, limits: Limits) -> tuple[bytes, int]:
    """Unpack ``stream`` in chunks, counting against the message's limit as it goes (a bomb stops at
    the limit, whatever its headers said); the bytes (if kept) and how many there were."""
    chunks, size = [], 0
    while chunk := stream.read(CHUNK):
        size += len(chunk)
        found.unpacked += len(chunk)
        if found.unpacked > limits.max_unpacked:
            raise _over(name, limits)
        if keep:
            chunks.append(chunk)
    return b"".join(chunks), size
