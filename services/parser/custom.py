"""Custom formats and carriers' format settings, kept in the database.

A custom format is a TOML definition an operator wrote (``cdrflow formats add FILE.toml`` or
``POST /formats``). It is checked in full when saved, so a mistake is a
``FormatDefinitionError`` naming the key, never a failure in the middle of a carrier's file;
it may not take a built-in format's name. A carrier's format setting says which format reads
its CDR (or SDR) files and the carrier's own options: the zone its switch writes local times
in, and the share of bad rows that fails a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cdrflow.db.models import Carrier, CarrierFormat, FormatDefinitionRecord
from cdrflow.errors import InputError, UnknownCarrierError
from cdrflow.reference import add_carrier, record_change
from services.parser.definition import FormatDefinition, FormatDefinitionError, check_zone_name, definition_from_toml
from services.parser.registry import builtin_formats

KINDS = ("cdr", "sdr")


@dataclass(frozen=True, slots=True)
class FormatSummary:
    """One line of ``cdrflow formats``: ``origin`` is built-in or custom (with its version)."""

    name: str
    kind: str
    origin: str
    description: str


def save_format(session: Session, text: str, *, origin: str = "definition") -> tuple[FormatDefinition, int]:
    """Check a TOML definition and store it (new, or a new version of a custom format); returns it and its version."""
    definition = definition_from_toml(text, origin=origin)
    if definition.name in builtin_formats():
        raise FormatDefinitionError(f"{origin}: {definition.name!r} is a built-in format: give yours another name "
                                    f"(e.g. '{definition.name}-acme')")
    record = session.get(FormatDefinitionRecord, definition.name)
    action = "changed" if record else "added"
    if record is not None and record.kind != definition.kind:
        used = _carriers_using(session, definition.name)
        if used:
            raise FormatDefinitionError(f"{origin}: {definition.name!r} is a {record.kind} format used by carrier(s) "
                                        f"{', '.join(used)}; it can't become a {definition.kind} format")
    record = record or FormatDefinitionRecord(name=definition.name, version=0)
    record.kind, record.description, record.source = definition.kind, definition.description, text
    record.version += 1
    record.updated_at = datetime.now(UTC)
    session.add(record)
    record_change(session, "format", definition.name, action, f"version {record.version}")
    return definition, record.version


def remove_format(session: Session, name: str) -> None:
    record = session.get(FormatDefinitionRecord, name)
    if record is None:
        raise InputError(f"no custom format {name!r}" + (" (built-in formats can't be removed)"
                                                         if name in builtin_formats() else ""))
    used = _carriers_using(session, name)
    if used:
        raise InputError(f"format {name!r} is used by carrier(s) {', '.join(used)}: give them another format first")
    session.delete(record)
    record_change(session, "format", name, "removed")


def custom_formats(session: Session) -> dict[str, FormatDefinition]:
    """Every stored custom format, checked again as it is read (the definition language may have moved on)."""
    return {r.name: definition_from_toml(r.source, origin=f"custom format {r.name!r}")
            for r in session.scalars(select(FormatDefinitionRecord).order_by(FormatDefinitionRecord.name))}


def custom_format_source(session: Session, name: str) -> str | None:
    record = session.get(FormatDefinitionRecord, name)
    return None if record is None else record.source


def list_formats(session: Session | None) -> list[FormatSummary]:
    """Built-in formats, then custom ones (when a database session is given), each by name."""
    out = [FormatSummary(d.name, d.kind, "built-in", d.description) for d in builtin_formats().values()]
    out.sort(key=lambda f: f.name)
    if session is not None:
        for r in session.scalars(select(FormatDefinitionRecord).order_by(FormatDefinitionRecord.name)):
            out.append(FormatSummary(r.name, r.kind, f"custom v{r.version}", r.description))
    return out


class UnknownFormatError(InputError):
    """A carrier was given a format the parser does not know (neither built-in nor saved)."""

    def __init__(self, fmt: str, known: list[str]) -> None:
        self.format, self.known = fmt, known
        super().__init__(f"unknown file format {fmt!r} (known: {', '.join(known)}); a custom format is saved "
                         "with 'cdrflow formats add FILE.toml', and 'cdrflow formats detect FILE' suggests one")


def check_format(session: Session, fmt: str, kind: str, *, carrier: str = "CARRIER") -> None:
    """``fmt`` is a known format (built-in or custom) that reads ``kind`` files; else
    UnknownFormatError listing the known ones, or InputError saying which kind it reads."""
    definition = builtin_formats().get(fmt)
    record = None if definition else session.get(FormatDefinitionRecord, fmt)
    found_kind = definition.kind if definition else (record.kind if record else None)
    if found_kind is None:
        raise UnknownFormatError(fmt, sorted(set(builtin_formats()) | set(session.scalars(
            select(FormatDefinitionRecord.name)))))
    if found_kind != kind:
        raise InputError(f"{fmt!r} is a {found_kind} format: it can't read {kind} files (for {found_kind} files: "
                         f"'cdrflow formats use {carrier} --kind {found_kind} --format {fmt}')")


DEFAULT_CDR_FORMAT = "generic-cdr"


@dataclass(frozen=True, slots=True)
class CarrierSaved:
    """A carrier added or changed, and which format reads its CDR files and why: ``given``
    (asked for), ``named`` (the built-in format of the carrier's own name, e.g. gamma),
    ``kept`` (a carrier changed without a format keeps its own) or ``default``."""

    code: str
    file_format: str
    chosen: str
    setting: str | None  # the carrier's 'formats use' CDR setting, which reads its CDR files instead

    @property
    def cdr_format(self) -> str:
        return self.setting or self.file_format


def save_carrier(session: Session, code: str, name: str, fmt: str | None = None) -> CarrierSaved:
    """Add or change a carrier (``cdrflow carriers add``). Its ``file_format`` reads its CDR files
    unless a ``formats use`` setting says otherwise; a format given is checked first. Without one,
    a new carrier whose code is a built-in CDR format's name (gamma, cucm, …) gets that format,
    any other the default, and a carrier already there keeps its own."""
    existing = session.get(Carrier, code)
    if fmt is not None:
        check_format(session, fmt, "cdr", carrier=code)
        chosen = "given"
    elif existing is not None:
        fmt, chosen = existing.file_format, "kept"
    elif (named := builtin_formats().get(code)) is not None and named.kind == "cdr":
        fmt, chosen = code, "named"
    else:
        fmt, chosen = DEFAULT_CDR_FORMAT, "default"
    add_carrier(session, code, name, fmt)
    setting = session.get(CarrierFormat, (code, "cdr"))
    return CarrierSaved(code, fmt, chosen, setting.format if setting else None)


def set_carrier_format(session: Session, carrier: str, kind: str, fmt: str, *, zone: str | None = None,
                       max_reject_share: float | None = None) -> CarrierFormat:
    """Which format reads ``carrier``'s ``kind`` files, with its options (None: the format's own)."""
    if session.get(Carrier, carrier) is None:
        raise UnknownCarrierError(carrier)
    if kind not in KINDS:
        raise InputError(f"kind must be cdr or sdr, not {kind!r}")
    check_format(session, fmt, kind, carrier=carrier)
    if zone is not None:
        check_zone_name(zone, "zone")
    if max_reject_share is not None and not 0 <= max_reject_share <= 1:
        raise InputError("max_reject_share must be from 0 to 1 (e.g. 0.05 for 5%)")
    setting = session.get(CarrierFormat, (carrier, kind)) or CarrierFormat(carrier=carrier, kind=kind)
    setting.format, setting.zone, setting.max_reject_share = fmt, zone, max_reject_share
    session.add(setting)
    record_change(session, "carrier", carrier, "changed", f"{kind} format {fmt}" + (f", zone {zone}" if zone else ""))
    return setting


def carrier_options(setting: CarrierFormat | None) -> dict[str, Any]:
    """The parser options a carrier's setting gives (only those it sets)."""
    if setting is None:
        return {}
    options: dict[str, Any] = {}
    if setting.zone:
        options["zone"] = setting.zone
    if setting.max_reject_share is not None:
        options["max_reject_share"] = setting.max_reject_share
    return options


def _carriers_using(session: Session, name: str) -> list[str]:
    by_setting = session.scalars(select(CarrierFormat.carrier).where(CarrierFormat.format == name))
    by_default = session.scalars(select(Carrier.code).where(Carrier.file_format == name))
    return sorted(set(by_setting) | set(by_default))
