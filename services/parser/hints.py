"""What an operator should do about a carrier's file that is not in the carrier's format.

When a file's header lacks the columns of the carrier's format (``HeaderMismatchError``), the
carrier most likely has the wrong format (a new carrier left at ``generic-cdr``). The failed
file's reason then says which format was tried, which format ``cdrflow formats detect`` would
suggest for the file (the likely one of the file's kind, other than the one tried), and the
commands that fix it: set the format, retry the file. Only a suggestion: nothing is set.
"""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from cdrflow.db.models import File
from cdrflow.errors import CdrflowError
from services.parser.custom import custom_formats
from services.parser.detect import suggest_formats
from services.parser.registry import builtin_formats


def format_hint(session: Session, file: File, tried: str, path: Path, zone: ZoneInfo) -> str:
    """The advice appended to the failed file's reason (starts with "; ")."""
    command = f"cdrflow formats use {file.carrier} --kind {file.kind} --format"
    retry = f", then 'cdrflow files retry {file.id}'"
    likely = suggested_format(session, file.kind, tried, path, zone)
    if likely is not None:
        return (f"; carrier {file.carrier}'s {file.kind} files are read as {tried}, but this file looks like "
                f"{likely} ('cdrflow formats detect' suggests it): '{command} {likely}'{retry}")
    return (f"; carrier {file.carrier}'s {file.kind} files are read as {tried}, and no known format reads this "
            f"file: write one (docs/formats.md), 'cdrflow formats add FILE.toml', then '{command} NAME'{retry}")


def suggested_format(session: Session, kind: str, tried: str, path: Path, zone: ZoneInfo) -> str | None:
    """The best format ``suggest_formats`` finds likely for the file, of ``kind``, not ``tried``."""
    candidates = dict(builtin_formats())
    try:
        candidates |= custom_formats(session)
    except CdrflowError:
        pass  # a custom format that no longer reads is not a suggestion; the built-in ones still are
    candidates = {name: d for name, d in candidates.items() if d.kind == kind and name != tried}
    likely = [s for s in suggest_formats(path, candidates, zone=zone) if s.likely]
    return likely[0].name if likely else None
