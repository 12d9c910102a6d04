"""The statuses a file can be in, and the words operators use for them.

A file's status is one of ``FILE_STATUSES`` (``files.status``; ``arriving`` is an upload whose
announcement still waits in the outbox). Operators write what the console and the brief call
things ("Potential Duplicate"), so a status filter also takes those words, in any case, with
spaces, hyphens or underscores: ``file_status`` reads one, and refuses a word that is no status
with the list of those that are (a filter that silently matches nothing looks like "no files").
"""

from __future__ import annotations

import re

from cdrflow.errors import InputError

FILE_STATUSES = ("arriving", "arrived", "held", "accepted", "discarded", "parsed", "rated", "information",
                 "failed", "reversed")
"""In the order a file goes through them (``information``: an SDR file kept, not billed)."""

OPERATOR_WORDS = {"potential-duplicate": "held", "duplicate": "held", "same-name": "held"}
"""The operator's words for statuses, written as ``file_status`` normalises them: a held file is
a Potential Duplicate, or one that reuses an earlier file's name (docs/duplicates.md)."""


def file_status(text: str) -> str:
    """The status ``text`` names: a status (``held``) or an operator's word for one
    (``Potential Duplicate``, ``potential-duplicate``); InputError listing the statuses if none."""
    word = re.sub(r"[\s_-]+", "-", text.strip().lower())
    if word in FILE_STATUSES:
        return word
    if word in OPERATOR_WORDS:
        return OPERATOR_WORDS[word]
    raise InputError(f"no file status {text!r}: use one of {', '.join(FILE_STATUSES)} "
                     f"(or potential-duplicate for held)")
