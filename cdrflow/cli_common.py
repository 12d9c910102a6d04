"""What every group of CLI commands shares. Imports stay inside the functions so that
``cdrflow --help`` does not pay for SQLAlchemy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from cdrflow.settings import Settings

if TYPE_CHECKING:
    from cdrflow.client import AdminClient
    from cdrflow.db import Database


def open_database(settings: Settings) -> Database:
    """The configured database (SQLite in the data directory unless a URL is set)."""
    from cdrflow.db import Database

    return Database(settings.effective_database_url)


# --- listing and showing what the console shows (``cdrflow <objects> list|show [--json]``) ------

json_option = click.option("--json", "as_json", is_flag=True,
                           help="print the API's JSON (for scripts): money as decimal text, times ISO 8601")


def admin_client(ctx: click.Context) -> AdminClient:
    """The admin API's client, with this machine's token: list and show go through the API, so the
    command line sees what the console sees."""
    from cdrflow.client import AdminClient

    return AdminClient.for_settings(ctx.obj)


def echo_json(value: Any) -> None:
    import orjson

    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def cell(value: Any) -> str:
    """A value as a table shows it: '-' for none, yes/no, a list by its length (or its words)."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(map(str, value)) if all(isinstance(v, str) for v in value) else str(len(value))
    if isinstance(value, dict):
        return ",".join(f"{k}={cell(v)}" for k, v in value.items())
    return " ".join(str(value).split())


def echo_table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    """A header row of ``columns`` (the JSON keys), then one row each, every column as wide as its
    widest cell so long names don't push the others out of line; the last column is not padded."""
    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    for row in [list(columns), *cells]:
        click.echo("  ".join(text.ljust(w) for text, w in zip(row[:-1], widths)) + ("  " if len(row) > 1 else "")
                   + row[-1])


def echo_listing(rows: list[dict[str, Any]], columns: tuple[str, ...], as_json: bool, empty: str) -> None:
    """``list``: the JSON, or a table with a header row (``empty`` when there is nothing)."""
    if as_json:
        echo_json(rows)
    elif not rows:
        click.echo(empty)
    else:
        echo_table(rows, columns)


def echo_object(view: dict[str, Any], as_json: bool) -> None:
    """``show``: the JSON, or one ``key value`` line per field (the JSON keys), then each list of
    objects as a table of its own under its key."""
    if as_json:
        echo_json(view)
        return
    tables = {k: v for k, v in view.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)}
    width = max(len(k) for k in view)
    for key, value in view.items():
        if key not in tables:
            click.echo(f"{key.ljust(width)}  {cell(value)}")
    for key, rows in tables.items():
        click.echo(f"\n{key} ({len(rows)}):")
        echo_table(rows, tuple(dict.fromkeys(k for r in rows for k in r)))


def add_list_command(group: click.Group, path: str, columns: tuple[str, ...], empty: str, doc: str) -> None:
    """``<group> list [--json]``: ``GET /<path>`` as a table with ``columns`` (or the JSON)."""

    @group.command("list", help=doc)
    @json_option
    @click.pass_context
    def list_(ctx: click.Context, as_json: bool) -> None:
        echo_listing(admin_client(ctx).listing(path), columns, as_json, empty)


def add_show_command(group: click.Group, path: str, argument: str, doc: str) -> None:
    """``<group> show ARGUMENT [--json]``: ``GET /<path>/<argument>``, one field per line (or the JSON)."""

    @group.command("show", help=doc)
    @click.argument(argument)
    @json_option
    @click.pass_context
    def show(ctx: click.Context, as_json: bool, **arguments: str) -> None:
        echo_object(admin_client(ctx).shown(path, arguments[argument]), as_json)
