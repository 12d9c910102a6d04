"""A format definition: what an operator writes in TOML to teach cdrflow a carrier's layout.

Built-in formats are such definitions too (``services/parser/definitions/*.toml``); the
language is documented in docs/formats.md. A definition says how to split lines (``[csv]``),
which rows are calls (``[rows]``) and where each field of a call record, or of a carrier
transaction, comes from (``[fields.<name>]``). ``definition_from_toml`` checks it all up
front, so a mistake in a definition is a ``FormatDefinitionError`` naming the key, never a
crash in the middle of a file.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cdrflow.errors import InputError
from services.parser.tokenise import Dialect

CDR_FIELDS = ("cli", "dialled", "start", "end", "answer", "duration", "answered", "charge_code", "cost",
              "account_code", "direction")
SDR_FIELDS = ("reference", "description", "event_type", "period_start", "period_end", "effective_date",
              "quantity", "amount", "pro_rata", "pro_rata_amount", "account_code")
TEXT, TIME, DATE, SECONDS, FLAG, MONEY, CHOICE, COUNT = "text", "time", "date", "seconds", "flag", "money", "choice", "count"
KIND_OF = {"cli": TEXT, "dialled": TEXT, "start": TIME, "end": TIME, "answer": TIME, "duration": SECONDS,
           "answered": FLAG, "charge_code": TEXT, "cost": MONEY, "account_code": TEXT, "direction": CHOICE,
           "reference": TEXT, "description": TEXT, "event_type": TEXT, "period_start": DATE, "period_end": DATE,
           "effective_date": DATE, "quantity": COUNT, "amount": MONEY, "pro_rata": FLAG, "pro_rata_amount": MONEY}
REQUIRED = {"cdr": ("cli", "dialled", "start"), "sdr": ("reference", "amount")}
REQUIRED_VALUE = ("cli", "dialled", "start", "reference")
"""Fields whose empty value rejects the row unless the definition says ``required = false``: a call
without a start can't be placed in a billing period or a time band."""
ANSWERED_FROM = ("duration", "answer")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
DIRECTIONS = ("outbound", "inbound")


class FormatDefinitionError(InputError):
    """A format definition (TOML) is not valid; the message names the key."""


def normalise_name(name: str) -> str:
    """Header names compare case-, space-, underscore- and hyphen-insensitively."""
    return re.sub(r"[\s_\-]+", "", name).lower()


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """Where one field comes from and how to read it.

    ``columns``: header names or 1-based positions (several are joined with a space, e.g. a
    date column and a time column). ``formats``: for times, ``iso``, ``epoch``, ``epoch_ms``
    or strftime patterns, tried in order. ``optional``: the column may be absent from the
    header. ``required``: an empty value rejects the row. ``values``: for ``answered`` and
    ``pro_rata``, the values meaning true (``false_values`` those meaning false; any other
    value rejects the row when ``false_values`` is given, else means false). ``map``: for
    ``direction``, carrier value → outbound/inbound.
    """

    name: str
    kind: str
    columns: tuple[str | int, ...] = ()
    formats: tuple[str, ...] = ("iso",)
    zone: str | None = None
    optional: bool = False
    required: bool = False
    unit: str = "s"
    values: tuple[str, ...] = ()
    false_values: tuple[str, ...] = ()
    map: Mapping[str, str] = field(default_factory=dict)
    between: tuple[str, str] | None = None  # duration = seconds between two time fields
    derived_from: str | None = None  # answered from "duration" (> 0) or from "answer" (an answer time is given)
    after: str | None = None  # period_end = this date field plus ``months`` (e.g. a rental's month)
    months: int = 1
    negative: bool = False  # money may be negative (credits, pro-rata refunds)
    default: str | None = None
    strip: str = ""  # characters stripped from both ends, beyond whitespace (e.g. "'" or "=")

    def label(self) -> str:
        cols = [c for c in self.columns if not (isinstance(c, str) and normalise_name(c) == normalise_name(self.name))]
        if not cols:
            return self.name
        shown = ", ".join(f"column {c}" if isinstance(c, int) else repr(c) for c in cols)
        return f"{self.name} ({shown})"


@dataclass(frozen=True, slots=True)
class RowFilter:
    """Only rows whose ``column`` holds one of ``values`` are calls; others are skipped, not rejected."""

    column: str | int
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FormatDefinition:
    name: str
    kind: str  # cdr | sdr
    description: str
    dialect: Dialect
    header: bool
    skip_rows: int  # lines after the header (or at the top, without one) that are not data
    widths: tuple[int, ...]  # accepted column counts; empty = the header's width
    fields: Mapping[str, FieldSpec]
    rows: RowFilter | None
    zone: str | None  # the switch's zone for times without an offset; None = the caller's
    max_reject_share: float
    source: str  # the TOML text, kept so a stored definition can be shown and versioned

    def column_refs(self) -> list[str | int]:
        refs: list[str | int] = [c for f in self.fields.values() for c in f.columns]
        if self.rows:
            refs.append(self.rows.column)
        return refs


def definition_from_toml(text: str, *, origin: str = "definition") -> FormatDefinition:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FormatDefinitionError(f"{origin}: not valid TOML ({exc})") from exc
    return definition_from_dict(doc, source=text, origin=origin)


def definition_from_dict(doc: Mapping[str, Any], *, source: str = "", origin: str = "definition") -> FormatDefinition:
    def fail(msg: str) -> FormatDefinitionError:
        return FormatDefinitionError(f"{origin}: {msg}")

    _only(doc, {"name", "kind", "description", "csv", "rows", "fields", "zone", "max_reject_share"}, "", fail)
    name = doc.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise fail("'name' must be lower-case letters, digits, '.', '_' or '-' (e.g. 'acme-cdr')")
    kind = doc.get("kind", "cdr")
    if kind not in REQUIRED:
        raise fail(f"'kind' must be 'cdr' or 'sdr', not {kind!r}")
    csv_doc = doc.get("csv", {})
    _only(csv_doc, {"delimiter", "quote", "escape", "header", "skip_rows", "widths"}, "csv.", fail)
    delimiter = csv_doc.get("delimiter", ",")
    if delimiter == "\\t":
        delimiter = "\t"
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in "\r\n\"":
        raise fail("'csv.delimiter' must be one character (use \"\\t\" for tab)")
    quote = csv_doc.get("quote", '"') or None
    escape = csv_doc.get("escape") or None
    if (quote is not None and len(quote) != 1) or (escape is not None and len(escape) != 1):
        raise fail("'csv.quote' and 'csv.escape' must be one character (or empty for none)")
    header = csv_doc.get("header", True)
    widths = tuple(csv_doc.get("widths", ()))
    if not isinstance(header, bool) or not all(isinstance(w, int) and w > 0 for w in widths):
        raise fail("'csv.header' must be true or false and 'csv.widths' a list of column counts")
    fields_doc = doc.get("fields", {})
    if not isinstance(fields_doc, Mapping):
        raise fail("'fields' must be a table of field definitions")
    allowed = CDR_FIELDS if kind == "cdr" else SDR_FIELDS
    fields = {}
    for fname, spec in fields_doc.items():
        if fname not in allowed:
            raise fail(f"unknown field 'fields.{fname}' for a {kind} format (known: {', '.join(allowed)})")
        if isinstance(spec, (str, int)):
            spec = {"column": spec}
        fields[fname] = _field(fname, spec, header, fail)
    missing = [f for f in REQUIRED[kind] if f not in fields]
    if kind == "cdr" and "duration" not in fields:
        missing.append("duration")
    if missing:
        raise fail(f"a {kind} format needs fields {', '.join(missing)}")
    if "answered" in fields and fields["answered"].derived_from == "answer" and "answer" not in fields:
        raise fail("'fields.answered.from' = \"answer\" needs an answer field (the time the call was answered)")
    if "period_end" in fields and fields["period_end"].after and "period_start" not in fields:
        raise fail("'fields.period_end.after' needs a period_start field")
    for fname, spec in fields.items():
        if spec.between:
            for other in spec.between:
                if other not in fields or fields[other].kind != TIME:
                    raise fail(f"'fields.{fname}.between' names {other!r}, which is not a time field of this format")
    rows = None
    if "rows" in doc:
        _only(doc["rows"], {"column", "values"}, "rows.", fail)
        col, values = doc["rows"].get("column"), doc["rows"].get("values")
        if not isinstance(col, (str, int)) or not isinstance(values, list) or not values:
            raise fail("'rows' needs 'column' and a non-empty list 'values'")
        rows = RowFilter(_column(col, header, "rows.column", fail), tuple(str(v) for v in values))
    if doc.get("zone") is not None:
        _check_zone(doc["zone"], "zone", fail)
    share = doc.get("max_reject_share", 0.5)
    if not isinstance(share, (int, float)) or not 0 <= share <= 1:
        raise fail("'max_reject_share' must be a number from 0 to 1")
    return FormatDefinition(
        name=name, kind=kind, description=str(doc.get("description", "")),
        dialect=Dialect(delimiter=delimiter, quote=quote, escape=escape), header=header,
        skip_rows=int(csv_doc.get("skip_rows", 0)), widths=widths, fields=fields, rows=rows,
        zone=doc.get("zone"), max_reject_share=float(share), source=source)


def _only(doc: Any, keys: set[str], prefix: str, fail) -> None:  # type: ignore[no-untyped-def]
    if not isinstance(doc, Mapping):
        raise fail(f"'{prefix.rstrip('.')}' must be a table")
    unknown = sorted(set(doc) - keys)
    if unknown:
        raise fail(f"unknown key(s) {', '.join(prefix + k for k in unknown)} (known: {', '.join(sorted(keys))})")


def _column(ref: Any, header: bool, where: str, fail) -> str | int:  # type: ignore[no-untyped-def]
    if isinstance(ref, bool) or not isinstance(ref, (str, int)):
        raise fail(f"'{where}' must be a column name or a 1-based position")
    if isinstance(ref, int) and ref < 1:
        raise fail(f"'{where}' positions start at 1")
    if isinstance(ref, str) and not header:
        raise fail(f"'{where}' names column {ref!r}, but the format has no header row: use a 1-based position")
    return ref


def _field(fname: str, spec: Any, header: bool, fail) -> FieldSpec:  # type: ignore[no-untyped-def]
    keys = {"column", "columns", "format", "formats", "zone", "optional", "required", "unit", "values",
            "false_values", "map", "between", "from", "negative", "default", "strip", "after", "months"}
    _only(spec, keys, f"fields.{fname}.", fail)
    kind = KIND_OF[fname]
    cols = spec.get("columns", [spec["column"]] if "column" in spec else [])
    if not isinstance(cols, list):
        raise fail(f"'fields.{fname}.columns' must be a list")
    columns = tuple(_column(c, header, f"fields.{fname}.column", fail) for c in cols)
    formats = spec.get("formats", [spec["format"]] if "format" in spec else ["iso"])
    between = spec.get("between")
    if between is not None and (kind != SECONDS or not isinstance(between, list) or len(between) != 2):
        raise fail(f"'fields.{fname}.between' is for duration only: a list of two time fields, e.g. [\"answer\", \"end\"]")
    from_ = spec.get("from")
    if from_ is not None and (fname != "answered" or from_ not in ANSWERED_FROM):
        raise fail(f"'fields.{fname}.from' only works as answered.from = \"duration\" (duration > 0) "
                   f"or \"answer\" (an answer time is given)")
    after, months = spec.get("after"), spec.get("months", 1)
    if after is not None and (fname != "period_end" or after != "period_start"
                              or isinstance(months, bool) or not isinstance(months, int) or months < 1):
        raise fail(f"'fields.{fname}.after' only works as period_end = {{ after = \"period_start\", months = N }}")
    if not columns and between is None and from_ is None and after is None and "default" not in spec:
        raise fail(f"'fields.{fname}' needs a column (or 'default'{', between' if kind == SECONDS else ''})")
    unit = spec.get("unit", "s")
    if unit not in ("s", "ms", "cs", "min"):
        raise fail(f"'fields.{fname}.unit' must be s, ms, cs or min")
    mapping = {str(k).lower(): v for k, v in spec.get("map", {}).items()}
    if kind == CHOICE and any(v not in DIRECTIONS for v in mapping.values()):
        raise fail(f"'fields.{fname}.map' values must be outbound or inbound")
    zone = spec.get("zone")
    if zone is not None:
        _check_zone(zone, f"fields.{fname}.zone", fail)
    return FieldSpec(
        name=fname, kind=kind, columns=columns, formats=tuple(formats), zone=zone,
        optional=bool(spec.get("optional", False)),
        required=bool(spec.get("required", fname in REQUIRED_VALUE)), unit=unit,
        values=tuple(str(v).lower() for v in spec.get("values", ())),
        false_values=tuple(str(v).lower() for v in spec.get("false_values", ())), map=mapping,
        between=tuple(between) if between else None, derived_from=from_, after=after, months=months,
        negative=bool(spec.get("negative", False)), default=spec.get("default"), strip=str(spec.get("strip", "")))


def _check_zone(zone: Any, where: str, fail) -> None:  # type: ignore[no-untyped-def]
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise fail(f"'{where}' is not a known time zone: {zone!r} (use an IANA name such as Europe/London)") from exc


def check_zone_name(zone: str, where: str) -> None:
    """A carrier's or a definition's zone must be an IANA name this machine knows."""
    _check_zone(zone, where, FormatDefinitionError)
