"""The duplicate rules, as a pure function: content seen before is held, never billed twice.

1. Same content (content fingerprint) as any earlier file, whatever that file's status, even
   discarded: held as a Potential Duplicate.
2. Otherwise, when the carrier's rule "same name" is on, a file reusing an earlier file name of
   the same carrier (so with different content) is held with reason "same name".
3. Otherwise the file is accepted and goes on to the parser.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DUPLICATE = "duplicate"
SAME_NAME = "same name"


@dataclass(frozen=True)
class Accepted:
    """New content: the file goes on to the parser."""


@dataclass(frozen=True)
class Held:
    """The file waits for an operator to release or discard it."""

    candidates: tuple[str, ...]  # ids of the earlier files it may repeat, oldest first
    hold_reason: str = DUPLICATE  # duplicate | same name

    @property
    def reason(self) -> str:
        if self.hold_reason == SAME_NAME:
            return (f"same name: {len(self.candidates)} earlier file(s) of this carrier had this name "
                    "with different content")
        return f"Potential Duplicate: same content as {len(self.candidates)} earlier file(s)"


Decision = Accepted | Held


def decide(same_content: Sequence[str], same_name: Sequence[str] = (), *, hold_same_name: bool = False) -> Decision:
    """``same_content``: earlier files with this content fingerprint; ``same_name``: earlier files of
    the carrier with this file name; both oldest first. ``hold_same_name``: the carrier's rule."""
    if same_content:
        return Held(tuple(same_content), DUPLICATE)
    if hold_same_name and same_name:
        return Held(tuple(same_name), SAME_NAME)
    return Accepted()
