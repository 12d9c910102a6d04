"""``cdrflow files``: list and inspect files, release or discard held ones (over the admin API)."""

from __future__ import annotations

import getpass
from typing import Any

import click


def _admin(ctx: click.Context):  # type: ignore[no-untyped-def]
    from cdrflow.client import AdminClient

    return AdminClient.for_settings(ctx.obj)


FILE_COLUMNS = ("file_id", "status", "carrier", "kind", "period", "received_at", "original_name", "status_reason",
                "overlaps")
"""``cdrflow files``: the table's columns, named as the JSON's keys."""


@click.group(invoke_without_command=True)
@click.option("--carrier", default=None, help="only this carrier's files")
@click.option("--kind", type=click.Choice(["cdr", "sdr"]), default=None)
@click.option("--status", default=None,
              help="arriving, arrived, held (or: potential-duplicate), accepted, discarded, parsed, rated, "
                   "information (SDR files not billed), failed, reversed")
@click.option("--month", default=None, metavar="YYYY-MM",
              help="billing period: files with calls (or fees) in that month; unparsed files by arrival")
@click.option("--period", type=click.Choice(["daily", "monthly"]), default=None, help="daily or monthly files")
@click.option("--json", "as_json", is_flag=True, help="the files as GET /files gives them (for scripts)")
@click.pass_context
def files(ctx: click.Context, carrier: str | None, kind: str | None, status: str | None, month: str | None,
          period: str | None, as_json: bool) -> None:
    """List files (or: files show|release|discard|retry FILE_ID)."""
    if ctx.invoked_subcommand is None:
        from cdrflow.filestatus import file_status

        if status is not None:
            status = file_status(status)
        found = _admin(ctx).files(status, carrier=carrier, kind=kind, month=month, period=period)
        from cdrflow.cli_common import echo_listing

        rows = found if as_json else [f | {"received_at": f["received_at"][:16]} for f in found]
        echo_listing(rows, FILE_COLUMNS, as_json, "no files")


@files.command("show")
@click.argument("file_id")
@click.option("--json", "as_json", is_flag=True, help="the file as GET /files/{id} gives it")
@click.pass_context
def files_show(ctx: click.Context, file_id: str, as_json: bool) -> None:
    """The file, its rejections (an SDR file: its fixed fees), the files it may repeat and how it
    compares with each."""
    view = _admin(ctx).file(file_id)
    if as_json:
        import orjson

        click.echo(orjson.dumps(view, option=orjson.OPT_INDENT_2).decode())
        return
    for key in ("file_id", "original_name", "carrier", "kind", "period", "direction", "channel", "received_at",
                "size", "fingerprint", "content_fingerprint", "status", "status_reason", "rows", "rejected", "calls",
                "overlaps", "overlap_policy"):
        click.echo(f"{key:20} {'' if view.get(key) is None else view[key]}")
    if decision := view.get("decision"):
        click.echo(f"{'decision':20} {decision['command']} by {decision['operator']} at {decision['decided_at']}: "
                   f"{decision['reason'] or '(no reason given)'}")
    if view.get("rejections_total"):
        click.echo(f"\nrejections ({view['rejections_total']}):")
        for r in view["rejections"]:
            click.echo(f"  line {r['row']}: {r['reason']}")
    if view.get("fees_total"):
        _echo_fees(view)
    comparisons = {c["file_id"]: c for c in view.get("comparisons", [])}
    if view.get("candidates"):
        click.echo(f"\npotential duplicate of ({view.get('hold_reason') or 'duplicate'}):")
    for c in view.get("candidates", []):
        click.echo(f"  {c['file_id']}  {c['status']:9} {c['carrier']} via {c['channel']} at {c['received_at'][:19]}"
                   f"  {c['original_name']}")
        if comparison := comparisons.get(c["file_id"]):
            _echo_comparison(comparison)


def _echo_fees(view: dict[str, Any]) -> None:
    """An SDR file's fixed-fee lines: the carrier's charge, whose it is, its price, or why it is not billed."""
    shown = "" if len(view["fees"]) == view["fees_total"] else f", first {len(view['fees'])} shown"
    click.echo(f"\nfixed fees ({view['fees_total']}{shown}):")
    click.echo(f"  {'line':>4} {'reference':16} {'description':28} {'qty':>4} {'cost':>10} {'status':11} "
               f"{'customer':10} {'price':>10}  reason")
    for f in view["fees"]:
        click.echo(f"  {f['row']:>4} {f['reference'] or '':16} {(f['description'] or '')[:28]:28} {f['quantity']:>4} "
                   f"{f['cost'] or f['amount'] or '':>10} {f['status']:11} {f['customer'] or '-':10} "
                   f"{f['price'] or '':>10}  {f['reason'] or ''}")


def _echo_comparison(c: dict[str, Any]) -> None:
    for side in ("this", "candidate"):
        p = c[side]
        text = p["error"] if "error" in p else (f"{p['rows']} rows ({p['rejected']} rejected), "
                                                 f"{p['first'] or '-'} .. {p['last'] or '-'}")
        click.echo(f"    {side:9} {text}")
    diff = c.get("first_difference")
    if diff is None:
        click.echo("    content   identical")
    elif "error" in diff:
        click.echo(f"    content   can't be compared: {diff['error']}")
    else:
        click.echo(f"    first difference at line {diff['line']}:")
        click.echo(f"      this:      {diff['this'] if diff['this'] is not None else '(file ended)'}")
        click.echo(f"      candidate: {diff['candidate'] if diff['candidate'] is not None else '(file ended)'}")


QUEUED_NOTE = "  (the broker is not reachable: the request is stored and goes on by itself when it is back)"


def _command(ctx: click.Context, file_id: str, command: str, reason: str, operator: str) -> None:
    reply = _admin(ctx).file_command(file_id, command, reason=reason, operator=operator)
    done = {"release": "released", "discard": "discarded", "retry": "retried",
            "bill-overlaps": "set to bill its overlapping calls",
            "skip-overlaps": "set to skip its overlapping calls", "reverse": "reversed"}[command]
    if reply.get("already"):
        click.echo(f"{file_id} was {done} already")
    else:
        click.echo(f"{command} of {file_id} requested" + ("" if reply.get("announced", True) else QUEUED_NOTE))


_reason = click.option("--reason", required=True, help="why: recorded with who and when")
_operator = click.option("--operator", envvar="CDRFLOW_OPERATOR", default=getpass.getuser, show_default="you",
                         help="who decides (recorded)")


@files.command("release")
@click.argument("file_id")
@_reason
@_operator
@click.pass_context
def files_release(ctx: click.Context, file_id: str, reason: str, operator: str) -> None:
    """A held file goes on to be parsed and billed as a new file."""
    _command(ctx, file_id, "release", reason, operator)


@files.command("discard")
@click.argument("file_id")
@_reason
@_operator
@click.pass_context
def files_discard(ctx: click.Context, file_id: str, reason: str, operator: str) -> None:
    """A held file is kept in the store but never billed."""
    _command(ctx, file_id, "discard", reason, operator)


@files.command("retry")
@click.argument("file_id")
@click.option("--reason", default="", help="why (recorded with who and when)")
@_operator
@click.pass_context
def files_retry(ctx: click.Context, file_id: str, reason: str, operator: str) -> None:
    """A failed or stuck file goes through parsing, rating and storing again (nothing is stored twice)."""
    _command(ctx, file_id, "retry", reason, operator)


@files.command("overlaps")
@click.argument("file_id")
@click.option("--bill/--skip", required=True,
              help="bill the file's overlapping calls anyway, or set them aside again (the default)")
@_reason
@_operator
@click.pass_context
def files_overlaps(ctx: click.Context, file_id: str, bill: bool, reason: str, operator: str) -> None:
    """Choose, for one file, what happens to its calls already billed or pending from other files."""
    _command(ctx, file_id, "bill-overlaps" if bill else "skip-overlaps", reason, operator)


@files.command("reverse")
@click.argument("file_id")
@_reason
@_operator
@click.option("--json", "as_json", is_flag=True, help="print the API's JSON reply")
@click.pass_context
def files_reverse(ctx: click.Context, file_id: str, reason: str, operator: str, as_json: bool) -> None:
    """A processed file leaves billing: its calls and fees are never billed, a corrected resend is
    not held as its duplicate. Refused once any of it is on an issued invoice: credit that first."""
    if as_json:
        import orjson

        reply = _admin(ctx).file_command(file_id, "reverse", reason=reason, operator=operator)
        click.echo(orjson.dumps(reply).decode())
        return
    _command(ctx, file_id, "reverse", reason, operator)
