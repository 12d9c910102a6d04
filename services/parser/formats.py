"""The file formats the parser knows, by name (a carrier's ``file_format``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from zoneinfo import ZoneInfo

from services.parser import generic_cdr
from services.parser.records import CallRecord, RejectedRow

Parse = Callable[[Iterable[bytes], ZoneInfo, str], Iterator[CallRecord | RejectedRow]]

CDR_FORMATS: dict[str, Parse] = {generic_cdr.FORMAT: generic_cdr.parse}
