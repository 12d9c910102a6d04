"""A file's content fingerprint: the SHA-256 of its decompressed bytes.

The same CSV sent plain, gzipped, bzip2ed or zipped has one content fingerprint, so a copy is
found however the carrier packed it. Decompression is the parser's own (``members``: magic
bytes, not names; the zip-bomb limit), so dedupe and parser always agree on what a file holds.
A zip's members are hashed one after another in archive order. Memory stays flat.
"""

from __future__ import annotations

import hashlib
from typing import BinaryIO

from services.parser.source import members

CHUNK = 1 << 20


def content_fingerprint(stream: BinaryIO, name: str = "file") -> str:
    """Hex SHA-256 of the decompressed content of ``stream``.

    Raises ``BadFileError`` for a damaged archive or one that inflates past the zip-bomb limit."""
    digest = hashlib.sha256()
    for member in members(stream, name):
        while chunk := member.stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
