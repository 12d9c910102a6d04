"""The duplicate rule, as a pure function: content seen before is held, never billed twice."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Accepted:
    """New content: the file goes on to the parser."""


@dataclass(frozen=True)
class Held:
    """Content seen before: the file waits for an operator to release or discard it."""

    candidates: tuple[str, ...]  # ids of earlier files with the same fingerprint, oldest first

    @property
    def reason(self) -> str:
        return f"Potential Duplicate: same content as {len(self.candidates)} earlier file(s)"


Decision = Accepted | Held


def decide(earlier_same_fingerprint: list[str]) -> Decision:
    """Hold the file when any earlier file had the same fingerprint, even a discarded one."""
    if earlier_same_fingerprint:
        return Held(tuple(earlier_same_fingerprint))
    return Accepted()
