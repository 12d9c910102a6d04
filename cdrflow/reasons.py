"""Reasons kept for operators (a file's status reason, a rejected row's reason, a dead letter's
error) are short enough to print: a hostile file can't turn one field into a 50 MB reason."""

from __future__ import annotations

REASON_MAX_CHARS = 1000
"""Longest reason stored; longer ones keep their start and say how much was cut."""


def shorten(text: str | None, limit: int = REASON_MAX_CHARS) -> str | None:
    """``text`` if it fits in ``limit`` characters, else its start and "… (N more characters)"."""
    if text is None or len(text) <= limit:
        return text
    tail = f"… ({len(text) - limit:,} more characters)"
    return text[:max(0, limit - len(tail))] + tail
