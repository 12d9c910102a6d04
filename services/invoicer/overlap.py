"""Overlapping calls: the same usage billed or pending from another file is never billed twice.

Carriers re-send usage: a monthly file repeats the daily files, a corrected file re-issues all
rows but one. A call *overlaps* when an earlier stored call has the same usage: carrier, CLI,
dialled number, start (to the microsecond, UTC) and duration. Its usage key is the start second
and a 64-bit BLAKE2b of the whole usage: the primary key of ``call_usage_claims``. Leading with
the start second keeps the claims of one file (carriers write calls in time order) side by side
in the index, so the check stays one cheap index probe per call however many calls are stored;
two different calls are taken for one only if they start in the same second and their 64-bit
hashes collide. A call repeated within one file overlaps its first occurrence too; a call stored
again under its own (file, row), as after a crash, does not.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl

SKIP, BILL = "skip", "bill"
POLICIES = (SKIP, BILL)
OVERLAP_COMMANDS = {"bill-overlaps": BILL, "skip-overlaps": SKIP}
"""Admin commands that set a file's overlap policy."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

UsageKey = tuple[int, int]
"""(start second since 1970 UTC, signed 64-bit hash of the usage)."""


def usage_key(carrier: str, cli: str, dialled: str, start: datetime, duration: int) -> UsageKey:
    """The call's usage key. ``start`` must be aware: one instant written with any offset is one key."""
    if start.tzinfo is None:
        raise ValueError(f"naive start {start!r}: a usage key needs an instant")
    micros = (start - _EPOCH) // timedelta(microseconds=1)
    digest = hashlib.blake2b(f"{carrier}\x1f{cli}\x1f{dialled}\x1f{micros}\x1f{duration}".encode(),
                             digest_size=8).digest()
    return micros // 1_000_000, int.from_bytes(digest, "big", signed=True)


def usage_text(start_micros: pl.Expr) -> pl.Expr:
    """What ``usage_key`` hashes, as UTF-8 bytes: a polars expression over a frame's ``carrier``,
    ``cli``, ``dialled`` and ``duration`` (an integer) columns and ``start_micros`` (microseconds
    since 1970 UTC)."""
    return pl.concat_str([pl.col("carrier"), pl.col("cli"), pl.col("dialled"), start_micros.cast(pl.String),
                          pl.col("duration").cast(pl.String)], separator="\x1f").cast(pl.Binary)


def usage_hashes(texts: Sequence[bytes]) -> pl.Series:
    """The signed 64-bit hash of each ``usage_text``, as an Int64 series. Only BLAKE2b runs once per
    call in Python (hashlib has no batch form): about half a microsecond a call."""
    blake2b = hashlib.blake2b
    digests = b"".join([blake2b(t, digest_size=8).digest() for t in texts])
    return pl.Series("usage_hash", struct.unpack(f">{len(texts)}q", digests), dtype=pl.Int64)


def usage_keys(calls: pl.DataFrame) -> pl.DataFrame:
    """``usage_key`` of every call of ``calls`` (columns carrier, cli, dialled, start as an aware
    Datetime, duration as an integer), row for row: columns ``usage_start`` and ``usage_hash``."""
    start = calls.schema["start"]
    if not isinstance(start, pl.Datetime) or start.time_zone is None:
        raise ValueError(f"start is {start}: a usage key needs an aware Datetime (an instant)")
    micros = pl.col("start").dt.cast_time_unit("us").dt.epoch("us")
    keys = calls.select(usage_start=micros // 1_000_000, text=usage_text(micros))
    if keys["text"].null_count():
        raise ValueError("a call without carrier, cli, dialled, start or duration has no usage key")
    return keys.select("usage_start").with_columns(usage_hashes(keys["text"].to_list()))


@dataclass(frozen=True)
class Owner:
    """The call that claimed a usage first."""

    file_id: str
    row: int


def mark_overlaps(rows: Sequence[dict], keys: Sequence[UsageKey], owners: Mapping[UsageKey, Owner],
                  policy: str) -> int:
    """Mark each row whose usage is claimed by another (file, row) as overlapping that file, set
    aside unless the file's ``policy`` is ``bill``. Returns how many rows overlap. Rows change in place."""
    if policy not in POLICIES:
        raise ValueError(f"overlap policy {policy!r} is not one of {', '.join(POLICIES)}")
    overlapping = 0
    for row, key in zip(rows, keys, strict=True):
        owner = owners[key]
        if (owner.file_id, owner.row) == (row["file_id"], row["row"]):
            row["overlaps_file_id"], row["set_aside"] = None, False
        else:
            row["overlaps_file_id"], row["set_aside"] = owner.file_id, policy == SKIP
            overlapping += 1
    return overlapping


def overlap_summary(counts: Mapping[str, int], names: Mapping[str, str]) -> str:
    """ "overlaps 12 call(s) of file(s) a.csv, b.csv" from calls per earlier file id."""
    total = sum(counts.values())
    files = ", ".join(names.get(f, f) for f in sorted(counts, key=lambda f: names.get(f, f)))
    return f"overlaps {total} call(s) of file(s) {files}"
