"""The commands the documentation shows, read out of README.md and docs/*.md.

``sh`` blocks are commands to run as written (tests/integration/test_docs_commands.py runs them);
plain blocks may hold command synopses (``[--json]``, ``a|b``), whose ``cdrflow`` lines are still
checked against the real command line (tests/unit/test_docs_blocks.py) so that neither drifts.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")))

_FENCE = re.compile(r"^\s*```(\S*)\s*$")
_OPTION = re.compile(r"^--?[A-Za-z][\w-]*")
_SUBSHELL = re.compile(r"\$\(([^()]*)\)")
_SHELL_OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<"}


def doc_name(doc: Path) -> str:
    """``doc`` as messages name it: relative to the repository when it is in it."""
    return str(doc.relative_to(REPO)) if doc.is_relative_to(REPO) else str(doc)


@dataclass(frozen=True)
class Block:
    """A fenced block: its document, the line of its opening fence (1-based), language, lines."""

    doc: Path
    line: int
    lang: str
    lines: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"{doc_name(self.doc)}:{self.line}"

    @property
    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


@dataclass(frozen=True)
class Command:
    """One command of a block, continuation lines joined and its comment dropped.

    ``line`` is the document line it starts on; ``background`` is a trailing ``&``, which is
    not part of ``text``."""

    block: Block
    line: int
    text: str
    background: bool

    @property
    def where(self) -> str:
        return f"{doc_name(self.block.doc)}:{self.line}"


@dataclass(frozen=True)
class Invocation:
    """A ``cdrflow`` command line: the words after ``cdrflow`` and the options it names."""

    where: str
    words: tuple[str, ...]
    options: tuple[str, ...]


def blocks(doc: Path) -> list[Block]:
    """Every fenced block of ``doc``, in order. An unclosed fence is an error, not a block."""
    found: list[Block] = []
    lines = doc.read_text(encoding="utf-8").splitlines()
    opened: tuple[int, str] | None = None
    body: list[str] = []
    for number, line in enumerate(lines, start=1):
        fence = _FENCE.match(line)
        if opened is None:
            if fence:
                opened, body = (number, fence.group(1)), []
        elif line.strip() == "```":
            found.append(Block(doc, opened[0], opened[1], tuple(body)))
            opened = None
        else:
            body.append(line)
    if opened is not None:
        raise ValueError(f"{doc_name(doc)}:{opened[0]}: code block never closed")
    return found


def all_blocks() -> list[Block]:
    return [b for doc in DOCS for b in blocks(doc)]


def sh_blocks() -> list[Block]:
    return [b for b in all_blocks() if b.lang == "sh"]


def strip_comment(line: str) -> str:
    """``line`` without its shell comment: a ``#`` at the start of a word, outside quotes."""
    quote: str | None = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def commands(block: Block) -> list[Command]:
    """The commands of an ``sh`` block: ``\\`` continuations joined, comments and blank lines dropped."""
    found: list[Command] = []
    pending: list[str] = []
    start = 0
    for offset, raw in enumerate(block.lines, start=1):
        line = strip_comment(raw)
        if not pending:
            start = block.line + offset
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line.strip())
        text = " ".join(p for p in pending if p)
        pending = []
        if not text:
            continue
        background = text.endswith("&") and not text.endswith("&&")
        found.append(Command(block, start, text[:-1].rstrip() if background else text, background))
    if pending:
        raise ValueError(f"{block.where}: the block ends inside a continued (\\) command")
    return found


def synopsis_lines(block: Block) -> list[tuple[int, str]]:
    """The ``cdrflow`` lines of a plain block (a synopsis), each with its indented or ``\\``
    continuation lines joined on; other lines (``POST /files/…``, output) are not commands."""
    found: list[tuple[int, str]] = []
    for offset, raw in enumerate(block.lines, start=1):
        line = strip_comment(raw)
        continued = bool(found) and (raw[:1].isspace() or found[-1][1].endswith("\\"))
        if line.startswith("cdrflow "):
            found.append((block.line + offset, line))
        elif continued and line.strip():
            number, text = found[-1]
            found[-1] = (number, text.removesuffix("\\").rstrip() + " " + line.strip())
    return found


def _invocations_in(where: str, text: str, synopsis: bool) -> list[Invocation]:
    found: list[Invocation] = []
    for inner in _SUBSHELL.findall(text):
        found.extend(_invocations_in(where, inner, synopsis))
    text = _SUBSHELL.sub("SUBSHELL", text)
    try:
        tokens = shlex.split(text)
    except ValueError:
        if not synopsis:
            raise
        tokens = text.split()
    if synopsis:  # [--json], cdr|sdr, monthly|quarterly: each alternative is a word of its own
        tokens = [part for t in tokens for part in t.strip("[]").split("|") if part]
    i = 0
    while i < len(tokens):
        if tokens[i] != "cdrflow":
            i += 1
            continue
        j = i + 1
        while j < len(tokens) and tokens[j] not in _SHELL_OPERATORS and tokens[j] != "cdrflow":
            j += 1
        words = tuple(tokens[i + 1:j])
        options = tuple(m.group(0) for w in words if (m := _OPTION.match(w)))
        found.append(Invocation(where, words, options))
        i = j
    return found


def invocations(block: Block) -> list[Invocation]:
    """Every ``cdrflow`` invocation a block names: run ones in ``sh`` blocks, synopses elsewhere."""
    if block.lang == "sh":
        return [inv for c in commands(block) for inv in _invocations_in(c.where, c.text, synopsis=False)]
    return [inv for number, line in synopsis_lines(block)
            for inv in _invocations_in(f"{doc_name(block.doc)}:{number}", line, synopsis=True)]


_INLINE = re.compile(r"`(cdrflow [^`]*)`")


def inline_invocations() -> list[Invocation]:
    """``cdrflow …`` in the prose's inline code, outside fenced blocks. Prose shortens a command
    (`cdrflow rate`, `cdrflow charges`), so only the words and options it does name are real."""
    found: list[Invocation] = []
    for doc in DOCS:
        fenced = False
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), start=1):
            if _FENCE.match(line) or (fenced and line.strip() == "```"):
                fenced = not fenced
                continue
            if not fenced:
                for code in _INLINE.findall(line):
                    found.extend(_invocations_in(f"{doc_name(doc)}:{number}", code, synopsis=True))
    return found
