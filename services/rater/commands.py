"""``cdrflow fees …``: fixed-fee sheets, one per tariff, versioned (docs/fixed-fees.md). They act on
the database directly, like ``cdrflow rates load``; every load is a reference change, so the rater
prices fees waiting in reconciliation again by itself."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import orjson

from cdrflow.cli_common import open_database
from cdrflow.settings import Settings


def _echo_json(value: Any) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


@click.group()
def fees() -> None:
    """Fixed-fee sheets: what a tariff charges for carriers' fixed fees (line rentals, connections)."""


@fees.command("load")
@click.argument("tariff")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def fees_load(settings: Settings, tariff: str, path: Path, as_json: bool) -> None:
    """Validate a fee sheet and make it TARIFF's newest version (every problem is listed with its
    line; a sheet with any problem loads nothing)."""
    from cdrflow.filestore import FileStore
    from services.rater.feesheet import FeeSheetError
    from services.rater.fees import fee_sheet_view, load_fee_sheet

    try:
        with open_database(settings).transaction() as session:
            version = load_fee_sheet(session, FileStore(settings.file_store_dir), tariff, path.read_bytes(),
                                     source_name=path.name)
            view = fee_sheet_view(version)
    except FeeSheetError as exc:
        if not as_json:
            raise
        _echo_json({"error": str(exc), "problems": exc.problems})
        sys.exit(1)
    if as_json:
        _echo_json(view)
    else:
        click.echo(f"fee sheet {view['name']} for tariff {tariff}: version {view['version']} active, {view['rows']} rows")


@fees.command("list")
@click.option("--tariff", default=None, help="only this tariff's sheets")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def fees_list(settings: Settings, tariff: str | None, as_json: bool) -> None:
    """Every loaded fee sheet version, oldest first; the newest of each tariff is the one in use."""
    from services.rater.fees import fee_sheet_versions, fee_sheet_view

    with open_database(settings).transaction() as session:
        views = [fee_sheet_view(v) for v in fee_sheet_versions(session, tariff)]
    newest = {v["tariff"]: v["version"] for v in views}
    for v in views:
        v["active"] = newest[v["tariff"]] == v["version"]
    if as_json:
        _echo_json(views)
        return
    if not views:
        click.echo("no fee sheets loaded (cdrflow fees load TARIFF FILE)")
    for v in views:
        click.echo(f"{v['tariff']:12} v{v['version']:<3} {'active' if v['active'] else '      '} {v['rows']:>5} rows  "
                   f"{v['loaded_at'][:19]}  {v['name']}")


@fees.command("show")
@click.argument("tariff")
@click.option("--version", "number", type=int, default=None, help="default: the newest")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def fees_show(settings: Settings, tariff: str, number: int | None, as_json: bool) -> None:
    """A tariff's fee sheet, row by row, as it prices fees."""
    from cdrflow.errors import InputError
    from cdrflow.filestore import FileStore
    from services.rater.feesheet import read_fee_sheet
    from services.rater.fees import fee_row_view, fee_sheet_versions, fee_sheet_view

    with open_database(settings).transaction() as session:
        versions = [v for v in fee_sheet_versions(session, tariff) if number is None or v.version == number]
        if not versions:
            raise InputError(f"tariff {tariff!r} has no fee sheet" + (f" version {number}" if number else "")
                             + ": load one with 'cdrflow fees load TARIFF FILE'")
        version = versions[-1]
        view = fee_sheet_view(version)
    sheet = read_fee_sheet(FileStore(settings.file_store_dir).read_bytes(view["fingerprint"]), view["name"])
    view["sheet_rows"] = [fee_row_view(r) for r in sheet.rows]
    if as_json:
        _echo_json(view)
        return
    click.echo(f"fee sheet {view['name']} for tariff {tariff}, version {view['version']}, loaded {view['loaded_at'][:19]}")
    click.echo(f"{'line':>4} {'event_type':12} {'reference':14} {'description':28} {'rule':11} {'price':>10} "
               f"{'markup':>8} {'cost':>10} {'per':5} from")
    for r in view["sheet_rows"]:
        click.echo(f"{r['line']:>4} {r['event_type'] or '*':12} {r['reference'] or '*':14} {r['description'] or '*':28} "
                   f"{r['rule']:11} {r['price'] or '':>10} {r['markup'] or '':>8} {r['cost'] or '':>10} {r['per']:5} "
                   f"{r['effective_from'] or ''}")
