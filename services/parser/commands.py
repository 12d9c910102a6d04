"""``cdrflow parse`` and ``cdrflow formats …``: read a carrier's file locally, and manage the formats
the parser knows (built-in ones, and custom ones kept in the database). See docs/formats.md."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

import click

from cdrflow.errors import DatabaseError, InputError
from cdrflow.cli_common import echo_json, json_option, open_database
from cdrflow.settings import Settings


def _definition(settings: Settings, fmt: str):  # type: ignore[no-untyped-def]
    """A built-in format's name, a custom format's name (from the database) or a TOML file."""
    from services.parser.definition import definition_from_toml
    from services.parser.registry import builtin_formats

    if fmt in builtin_formats():
        return builtin_formats()[fmt]
    path = Path(fmt)
    if fmt.endswith(".toml") and path.is_file():
        return definition_from_toml(path.read_text("utf-8"), origin=str(path))
    from services.parser.custom import custom_formats

    with open_database(settings).transaction() as session:
        found = custom_formats(session).get(fmt)
    if found is None:
        raise InputError(f"unknown file format {fmt!r}: see 'cdrflow formats' (or give a definition FILE.toml)")
    return found


def _zone(name: str | None, settings: Settings) -> ZoneInfo:
    if name is None:
        return settings.zone
    from services.parser.definition import check_zone_name

    check_zone_name(name, "--zone")
    return ZoneInfo(name)


@contextmanager
def _output(path: Path | None):  # type: ignore[no-untyped-def]
    """Standard output, or ``path`` written whole or not at all (a failed file leaves no half CSV)."""
    if path is None:
        yield sys.stdout
        return
    partial = path.with_name(path.name + ".partial")
    try:
        with partial.open("w", newline="", encoding="utf-8") as out:
            yield out
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


@click.command()
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--format", "fmt", required=True,
              help="a format's name (see 'cdrflow formats') or a definition FILE.toml")
@click.option("--zone", default=None, help="the switch's time zone for times without an offset "
                                           "(default: the format's own, else CDRFLOW_TIMEZONE)")
@click.option("--max-reject-share", type=click.FloatRange(0, 1), default=None,
              help="fail the file when more than this share of rows is rejected (default: the format's, 0.5)")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="where the normalised CSV goes (default: standard output)")
@click.pass_obj
def parse(settings: Settings, path: Path, fmt: str, zone: str | None, max_reject_share: float | None,
          output: Path | None) -> None:
    """Read a carrier's FILE (.gz, .bz2 and .zip too) into normalised records, one CSV line per row, rejections included."""
    from services.parser.api import parse_file
    from services.parser.output import write_csv

    definition = _definition(settings, fmt)
    options: dict[str, Any] = {}
    if zone is not None:
        options["zone"] = _zone(zone, settings).key
    if max_reject_share is not None:
        options["max_reject_share"] = max_reject_share
    with _output(output) as out:
        counts = write_csv(parse_file(path, definition, zone=settings.zone, options=options), out, kind=definition.kind)
    noun = "calls" if definition.kind == "cdr" else "carrier transactions"
    click.echo(f"{path.name}: {counts.rows} rows: {counts.records} {noun}, {counts.rejected} rejected"
               + (f", {counts.skipped} skipped (not {noun} by the format's rule)" if counts.skipped else "")
               + (f" -> {output}" if output else ""), err=output is None)


@click.group(invoke_without_command=True)
@json_option
@click.pass_context
def formats(ctx: click.Context, as_json: bool) -> None:
    """The file formats the parser knows (or: formats add|show|remove|detect|use)."""
    if ctx.invoked_subcommand is not None:
        return
    from services.parser.custom import list_formats

    settings: Settings = ctx.obj
    try:
        with open_database(settings).transaction() as session:
            listing = list_formats(session)
    except DatabaseError as exc:
        listing = list_formats(None)
        click.echo(f"(custom formats not shown: {exc}; 'cdrflow migrate' creates the tables)", err=True)
    if as_json:
        echo_json([{"format": f.name, "kind": f.kind, "origin": f.origin, "description": f.description}
                   for f in listing])
        return
    for f in listing:
        click.echo(f"{f.name:18} {f.kind:4} {f.origin:10} {f.description}")


@formats.command("add")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.pass_obj
def formats_add(settings: Settings, path: Path) -> None:
    """Save a custom format from its TOML definition (a new version if the name exists)."""
    from services.parser.custom import save_format

    text = path.read_text("utf-8")
    with open_database(settings).transaction() as session:
        definition, version = save_format(session, text, origin=str(path))
    click.echo(f"format {definition.name} ({definition.kind}) saved, version {version}")


@formats.command("show")
@click.argument("name")
@click.pass_obj
def formats_show(settings: Settings, name: str) -> None:
    """Print a format's TOML definition (built-in or custom)."""
    from services.parser.custom import custom_format_source
    from services.parser.registry import builtin_formats

    if name in builtin_formats():
        click.echo(builtin_formats()[name].source, nl=False)
        return
    with open_database(settings).transaction() as session:
        source = custom_format_source(session, name)
    if source is None:
        raise InputError(f"unknown file format {name!r}: see 'cdrflow formats'")
    click.echo(source, nl=False)


@formats.command("remove")
@click.argument("name")
@click.pass_obj
def formats_remove(settings: Settings, name: str) -> None:
    """Remove a custom format no carrier uses."""
    from services.parser.custom import remove_format

    with open_database(settings).transaction() as session:
        remove_format(session, name)
    click.echo(f"format {name} removed")


@formats.command("use")
@click.argument("carrier")
@click.option("--format", "fmt", required=True)
@click.option("--kind", type=click.Choice(["cdr", "sdr"]), default="cdr", show_default=True)
@click.option("--zone", default=None, help="the zone the carrier's switch writes local times in (IANA name)")
@click.option("--max-reject-share", type=click.FloatRange(0, 1), default=None,
              help="fail a file of this carrier when more than this share of rows is rejected")
@click.pass_obj
def formats_use(settings: Settings, carrier: str, fmt: str, kind: str, zone: str | None,
                max_reject_share: float | None) -> None:
    """Set the format (and options) that read CARRIER's CDR or SDR files."""
    from services.parser.custom import set_carrier_format

    with open_database(settings).transaction() as session:
        set_carrier_format(session, carrier, kind, fmt, zone=zone, max_reject_share=max_reject_share)
    click.echo(f"carrier {carrier}: {kind} files read as {fmt}" + (f" in {zone}" if zone else ""))


@formats.command("detect")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.pass_obj
def formats_detect(settings: Settings, path: Path) -> None:
    """Suggest formats for FILE from its first rows. A suggestion only: nothing is changed."""
    from services.parser.detect import suggest_formats
    from services.parser.registry import builtin_formats

    candidates = dict(builtin_formats())
    try:
        from services.parser.custom import custom_formats

        with open_database(settings).transaction() as session:
            candidates |= custom_formats(session)
    except DatabaseError as exc:
        click.echo(f"(custom formats not tried: {exc}; 'cdrflow migrate' creates the tables)", err=True)
    suggestions = suggest_formats(path, candidates, zone=settings.zone)
    _print_suggestions(path, suggestions, sys.stdout)


def _print_suggestions(path: Path, suggestions: list, out: TextIO) -> None:  # type: ignore[type-arg]
    likely = [s for s in suggestions if s.likely]
    if likely:
        out.write(f"{path.name}: likely {' or '.join(s.name for s in likely)}\n")
    else:
        out.write(f"{path.name}: no format reads its first rows well: write a custom format (docs/formats.md)\n")
    for s in suggestions:
        read = f"fits {s.fit:4.0%}, reads {s.score:4.0%} of {s.rows} rows" if s.rows else "does not fit"
        out.write(f"  {s.name:18} {s.kind:4} {read:34} {s.note}\n")
    out.write("This is a suggestion only: set a carrier's format with "
              "'cdrflow formats use CARRIER --kind cdr|sdr --format NAME'.\n")
