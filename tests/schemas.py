"""Validate events against the JSON Schemas in schemas/ (one per event type)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"

SCHEMA_OF_TYPE = {
    "cdrflow.file.arrived.v1": "file-arrived",
    "cdrflow.file.held.v1": "file-held",
    "cdrflow.file.accepted.v1": "file-accepted",
    "cdrflow.file.part.v1": "file-part",
    "cdrflow.record.parsed.v2": "record-parsed",
    "cdrflow.call.rated.v2": "call-rated",
    "cdrflow.run.closed.v1": "run-closed",
    "cdrflow.invoice.issued.v1": "invoice-issued",
    "cdrflow.credit-note.issued.v1": "credit-note-issued",
    "cdrflow.admin.command.v1": "admin-command",
    "cdrflow.message.dead-lettered.v1": "dead-letter",
}


@cache
def _registry() -> Registry:
    resources = []
    for path in SCHEMAS.glob("*.schema.json"):
        doc = json.loads(path.read_text())
        resources.append((doc["$id"], Resource.from_contents(doc)))
    return Registry().with_resources(resources)


@cache
def validator(name: str) -> Draft202012Validator:
    doc = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    return Draft202012Validator(doc, registry=_registry(), format_checker=FormatChecker())


def validate_event(doc: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError unless ``doc`` is a valid event of a known type."""
    name = SCHEMA_OF_TYPE[doc["type"]]
    validator(name).validate(doc)
