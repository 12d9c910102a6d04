"""The formats the parser knows by name: the built-in definitions shipped beside this module,
plus any custom definitions the caller hands in (the service reads those from the database)."""

from __future__ import annotations

from functools import cache
from importlib import resources

from services.parser.definition import FormatDefinition, definition_from_toml


@cache
def builtin_formats() -> dict[str, FormatDefinition]:
    out = {}
    for entry in sorted(resources.files("services.parser").joinpath("definitions").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            definition = definition_from_toml(entry.read_text("utf-8"), origin=f"built-in {entry.name}")
            out[definition.name] = definition
    return out
