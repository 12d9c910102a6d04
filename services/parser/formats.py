"""Which format (and options) parses a carrier's file: the carrier's settings, resolved.

A carrier's setting for the file's kind (``carrier_formats``) wins; without one, its CDR files
are read in ``Carrier.file_format``. The format is a built-in one or a custom one from the
database; the options are the carrier's (its switch's zone, its reject share).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from cdrflow.db.models import Carrier, CarrierFormat, FormatDefinitionRecord
from cdrflow.errors import BadFileError
from services.parser.custom import carrier_options
from services.parser.definition import FormatDefinition, FormatDefinitionError, definition_from_toml
from services.parser.registry import builtin_formats


def carrier_format(session: Session, carrier: Carrier | None, kind: str) -> tuple[FormatDefinition, dict[str, Any]]:
    """The definition and options for a carrier's ``kind`` (cdr/sdr) files; BadFileError if none fits."""
    if carrier is None:
        raise BadFileError("the file's carrier is not configured: the file is kept and can be re-parsed later")
    setting = session.get(CarrierFormat, (carrier.code, kind))
    name = setting.format if setting else carrier.file_format
    definition = builtin_formats().get(name) or _custom(session, name)
    if definition is None:
        raise BadFileError(f"carrier {carrier.code!r} has file format {name!r}, which the parser does not know: "
                           f"add it with 'cdrflow formats add' or set the carrier's format")
    if definition.kind != kind:
        raise BadFileError(f"carrier {carrier.code!r} has {definition.kind.upper()} format {name!r}, but the file is "
                           f"a {kind.upper()} file: set the carrier's {kind} format "
                           f"('cdrflow formats use {carrier.code} --kind {kind} --format F')")
    return definition, carrier_options(setting)


def _custom(session: Session, name: str) -> FormatDefinition | None:
    record = session.get(FormatDefinitionRecord, name)
    if record is None:
        return None
    try:
        return definition_from_toml(record.source, origin=f"custom format {name!r}")
    except FormatDefinitionError as exc:
        raise BadFileError(f"{exc}: fix it with 'cdrflow formats add'") from exc
