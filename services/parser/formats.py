"""Which format (and options) parses a carrier's file: the carrier's settings, resolved."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from cdrflow.db.models import Carrier
from cdrflow.errors import BadFileError
from services.parser.definition import FormatDefinition
from services.parser.registry import builtin_formats


def carrier_format(session: Session, carrier: Carrier | None, kind: str) -> tuple[FormatDefinition, dict[str, Any]]:
    """The definition and options for a carrier's ``kind`` (cdr/sdr) files; BadFileError if none fits."""
    if carrier is None:
        raise BadFileError("the file's carrier is not configured: the file is kept and can be re-parsed later")
    name = carrier.file_format
    definition = builtin_formats().get(name)
    if definition is None:
        raise BadFileError(f"carrier {carrier.code!r} has file format {name!r}, which the parser does not know")
    if definition.kind != kind:
        raise BadFileError(f"carrier {carrier.code!r} has {definition.kind.upper()} format {name!r}, but the file is "
                           f"a {kind.upper()} file: set the carrier's {kind} format")
    return definition, {}
