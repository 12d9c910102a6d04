"""Which remote files a source collects and what they are: pure functions, no network.

A rule is ``PATTERN=KIND,PERIOD,DIRECTION``. PATTERN is a glob relative to the source's remote
directory; its directory part says where to look (``monthly/*.csv``), its last part which names
match (case-insensitive). So daily and monthly files are told apart by directory
(``daily/*``, ``monthly/*``) or by name (``*_D_*.csv``, ``*_M_*.csv``). The first rule a file
matches wins; a file no rule matches is left on the server.
"""

from __future__ import annotations

import fnmatch
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass

from cdrflow.errors import InputError
from cdrflow.intake import DIRECTIONS, KINDS, PERIODS


@dataclass(frozen=True)
class Rule:
    pattern: str
    kind: str
    period: str
    direction: str

    @property
    def subdir(self) -> str:
        return posixpath.dirname(self.pattern)

    @property
    def name_pattern(self) -> str:
        return posixpath.basename(self.pattern)

    def directory(self, remote_dir: str) -> str:
        """The remote directory this rule lists."""
        return posixpath.normpath(posixpath.join(remote_dir or ".", self.subdir)) if self.subdir else (remote_dir or ".")

    def matches(self, name: str) -> bool:
        return fnmatch.fnmatchcase(name.lower(), self.name_pattern.lower())

    def spec(self) -> str:
        return f"{self.pattern}={self.kind},{self.period},{self.direction}"

    def to_dict(self) -> dict[str, str]:
        return {"pattern": self.pattern, "kind": self.kind, "period": self.period, "direction": self.direction}


@dataclass(frozen=True)
class RemoteEntry:
    """A regular file in a remote listing."""

    path: str  # as the server names it, directory included
    size: int  # bytes
    mtime: int  # seconds since the epoch, as the server reports it

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def version(self) -> tuple[int, int]:
        """What tells one content of a remote file from the next: rewritten in place, it changes."""
        return (self.size, self.mtime)


def remote_path(directory: str, name: str) -> str:
    """``name`` in ``directory`` as the server understands it ("." is the login directory)."""
    return name if directory in ("", ".") else posixpath.join(directory, name)


def parse_rule(spec: str) -> Rule:
    """``daily/*.csv=cdr,daily,outbound`` → Rule; a bad spec raises InputError saying what is wrong."""
    pattern, sep, rest = spec.partition("=")
    parts = [p.strip().lower() for p in rest.split(",")]
    if not sep or not pattern.strip() or len(parts) != 3:
        raise InputError(f"rule {spec!r} is not PATTERN=KIND,PERIOD,DIRECTION (e.g. 'daily/*.csv=cdr,daily,outbound')")
    kind, period, direction = parts
    for name, value, allowed in (("kind", kind, KINDS), ("period", period, PERIODS),
                                 ("direction", direction, DIRECTIONS)):
        if value not in allowed:
            raise InputError(f"rule {spec!r}: {name} {value!r} is not one of {', '.join(allowed)}")
    pattern = pattern.strip().strip("/")
    if ".." in pattern.split("/") or "*" in posixpath.dirname(pattern):
        raise InputError(f"rule {spec!r}: the directory part must be a plain path below the remote directory")
    return Rule(pattern, kind, period, direction)


def rules_from_dicts(docs: Iterable[dict[str, str]]) -> list[Rule]:
    return [Rule(d["pattern"], d["kind"], d["period"], d["direction"]) for d in docs]


def directories(rules: Iterable[Rule], remote_dir: str) -> list[str]:
    """Each directory to list once, in rule order."""
    return list(dict.fromkeys(rule.directory(remote_dir) for rule in rules))


def classify(entries: Iterable[RemoteEntry], directory: str, rules: Iterable[Rule],
             remote_dir: str) -> list[tuple[RemoteEntry, Rule]]:
    """The entries of ``directory`` some rule of that directory claims, with the first such rule."""
    here = [rule for rule in rules if rule.directory(remote_dir) == directory]
    claimed = []
    for entry in entries:
        rule = next((r for r in here if r.matches(entry.name)), None)
        if rule is not None:
            claimed.append((entry, rule))
    return claimed


def to_fetch(listing: Iterable[tuple[RemoteEntry, Rule]],
             collected: dict[str, tuple[int, int]]) -> list[tuple[RemoteEntry, Rule]]:
    """Files never collected, or rewritten since (size or mtime differ); empty files wait."""
    return [(e, r) for e, r in listing if e.size > 0 and collected.get(e.path) != e.version]


def settled(first: Iterable[tuple[RemoteEntry, Rule]],
            second: Iterable[RemoteEntry]) -> tuple[list[tuple[RemoteEntry, Rule]], list[RemoteEntry]]:
    """Split candidates into those unchanged between two listings and those still being written."""
    now = {e.path: e.version for e in second}
    first = list(first)
    ready = [(e, r) for e, r in first if now.get(e.path) == e.version]
    waiting = [e for e, _ in first if now.get(e.path) != e.version]
    return ready, waiting
