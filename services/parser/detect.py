"""Which formats could read a file, judged on its first rows: a suggestion for an operator.

Each candidate format parses the first ``sample_rows`` rows (decompressed, decoded as the
parser would). Its ``fit`` is the share of those rows laid out as it expects (header found,
column count right: a bad date in the right place still fits), its ``score`` the share it
reads as records (rows its own rule skips, like BroadWorks' Start records, count for it).
Real files have bad rows, so a format is *likely* on its fit. Nothing here is ever applied to a
file on its own: billing a file in a guessed format could bill the wrong numbers, so the
carrier's format is always set by an operator.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from cdrflow.errors import BadFileError
from services.parser.api import parse_file
from services.parser.definition import FormatDefinition

SAMPLE_ROWS = 50
LIKELY = 0.8
"""A format whose layout fits at least this share of the sample (and reads half) is shown as likely."""
LAYOUT_REASON = re.compile(r"^expected .* columns, found \d+$")


@dataclass(frozen=True, slots=True)
class Suggestion:
    name: str
    kind: str
    fit: float  # 0..1: share of the sample rows in the layout the format expects
    score: float  # 0..1: share of the sample rows read
    rows: int  # sample rows judged
    note: str  # why not, or the first rejection

    @property
    def likely(self) -> bool:
        return self.fit >= LIKELY and self.score >= 0.5


def suggest_formats(path: Path, formats: Mapping[str, FormatDefinition], *, zone: ZoneInfo,
                    sample_rows: int = SAMPLE_ROWS) -> list[Suggestion]:
    """Every format in ``formats`` judged on the file's first rows, best first."""
    out = [_judge(path, definition, zone, sample_rows) for definition in formats.values()]
    return sorted(out, key=lambda s: (-s.fit, -s.score, -s.rows, s.name))


def _judge(path: Path, definition: FormatDefinition, zone: ZoneInfo, sample_rows: int) -> Suggestion:
    try:
        with closing(parse_file(path, definition, zone=zone, batch_rows=sample_rows,
                                options={"max_reject_share": 1.0})) as batches:
            batch = next(batches, None)
    except BadFileError as exc:
        return Suggestion(definition.name, definition.kind, 0.0, 0.0, 0, _without_file(str(exc), path))
    if batch is None or batch.rows == 0:
        return Suggestion(definition.name, definition.kind, 0.0, 0.0, 0, "no data rows")
    read = batch.records.height + batch.skipped
    misfits = sum(1 for r in batch.rejects if LAYOUT_REASON.match(r.reason))
    note = f"line {batch.rejects[0].row}: {batch.rejects[0].reason}" if batch.rejects else ""
    return Suggestion(definition.name, definition.kind, (batch.rows - misfits) / batch.rows, read / batch.rows,
                      batch.rows, note)


def _without_file(message: str, path: Path) -> str:
    prefix = f"{path.name}: "
    return message[len(prefix):] if message.startswith(prefix) else message
