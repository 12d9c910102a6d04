"""Record-level events cut to stay well under the broker's message limit, whatever the rows hold.

A batch is cut at ``max_count`` records or once its estimated JSON size reaches
``SPLIT_BYTES``, whichever comes first; the cut depends only on the records, so a repeat
after a crash cuts the same batches (and so gives the same event ids).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

SPLIT_BYTES = 512 * 1024
"""Estimated JSON bytes per record-level event: half the producer's ``MAX_MESSAGE_BYTES``, so the
estimate may be out by 2× and the event still fits."""
FIELD_OVERHEAD = 24
"""JSON bytes per field beyond its value's text: quotes, key, colon, comma."""


def estimated_json_bytes(record: dict[str, Any]) -> int:
    """About how many bytes ``record`` takes as JSON (strings by length, anything else as 24)."""
    return sum(len(v) + FIELD_OVERHEAD if isinstance(v, str) else FIELD_OVERHEAD for v in record.values())


def sized_chunks(items: Iterable[dict[str, Any]], max_count: int,
                 max_bytes: int = SPLIT_BYTES) -> Iterator[list[dict[str, Any]]]:
    """``items`` in order, in lists of at most ``max_count`` and about ``max_bytes``; never an empty list."""
    chunk: list[dict[str, Any]] = []
    held = 0
    for item in items:
        size = estimated_json_bytes(item)
        if chunk and (len(chunk) >= max_count or held + size > max_bytes):
            yield chunk
            chunk, held = [], 0
        chunk.append(item)
        held += size
    if chunk:
        yield chunk
