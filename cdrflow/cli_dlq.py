"""``cdrflow dlq``: list and inspect dead letters, replay one once its cause is fixed (over the admin API)."""

from __future__ import annotations

import getpass
import json
import shutil
from typing import Any

import click

PAYLOAD_SHOWN = 4000
"""Characters of a payload ``dlq show`` prints; ``--json`` gives the whole of it."""
MIN_ERROR_WIDTH = 20
COLUMNS = ("ID", "SERVICE", "TOPIC", "FILE", "FAILED", "REPLAYED BY", "ERROR")
"""TOPIC is shown without the namespace; partition and offset are in ``dlq show``."""


def _admin(ctx: click.Context):  # type: ignore[no-untyped-def]
    from cdrflow.client import AdminClient

    return AdminClient.for_settings(ctx.obj)


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _minute(iso: str | None) -> str:
    return "-" if not iso else iso[:16].replace("T", " ")


def fit(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters with "…" when longer."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[:max(0, width - 1)] + "…"


def letter_rows(letters: list[dict[str, Any]], namespace: str) -> list[tuple[str, ...]]:
    return [(str(d["id"]), d["service"], d["topic"].removeprefix(f"{namespace}."), d["file_id"] or "-",
             _minute(d["failed_at"]), d["replayed_by"] or "-", f"{d['error_type']}: {d['error']}")
            for d in letters]


def table(rows: list[tuple[str, ...]], width: int) -> list[str]:
    """Header and rows, columns aligned; the last column (the error) is cut to fit ``width``."""
    widths = [max(len(r[i]) for r in [COLUMNS, *rows]) for i in range(len(COLUMNS) - 1)]
    room = max(MIN_ERROR_WIDTH, width - sum(w + 2 for w in widths))
    return ["  ".join([*(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)), fit(r[-1], room)]).rstrip()
            for r in [COLUMNS, *rows]]


@click.group()
def dlq() -> None:
    """Dead letters: messages a service could not process, kept with their error and payload."""


@dlq.command("list")
@click.option("--service", default=None, help="only this service's dead letters (dedupe, parser, rater, invoicer)")
@click.option("--json", "as_json", is_flag=True, help="print the API's JSON")
@click.pass_context
def dlq_list(ctx: click.Context, service: str | None, as_json: bool) -> None:
    """List dead letters, oldest first."""
    letters = _admin(ctx).dead_letters(service)
    if as_json:
        _echo_json(letters)
        return
    if not letters:
        click.echo("no dead letters" + (f" of {service}" if service else ""))
        return
    for line in table(letter_rows(letters, ctx.obj.namespace), shutil.get_terminal_size((120, 24)).columns):
        click.echo(line)


@dlq.command("show")
@click.argument("letter_id")
@click.option("--json", "as_json", is_flag=True, help="print the API's JSON (with the whole payload)")
@click.pass_context
def dlq_show(ctx: click.Context, letter_id: str, as_json: bool) -> None:
    """One dead letter: where it was read, why it failed, its original payload."""
    view = _admin(ctx).dead_letter(letter_id)
    if as_json:
        _echo_json(view)
        return
    for key in ("id", "service", "topic", "partition", "offset", "key", "event_id", "event_type", "file_id",
                "error_type", "error", "failed_at", "replayed_at", "replayed_by"):
        click.echo(f"{key:12} {'-' if view.get(key) is None else view[key]}")
    payload = view["payload"]
    click.echo(f"\npayload ({view['payload_encoding']}, {len(payload):,} characters):")
    click.echo(payload[:PAYLOAD_SHOWN])
    if len(payload) > PAYLOAD_SHOWN:
        click.echo(f"… ({len(payload) - PAYLOAD_SHOWN:,} more characters: use --json for the whole payload)")


@dlq.command("replay")
@click.argument("letter_id")
@click.option("--reason", default=None, help="why it can go through now (logged with who and when)")
@click.option("--operator", envvar="CDRFLOW_OPERATOR", default=getpass.getuser, show_default="you",
              help="who replays (recorded)")
@click.pass_context
def dlq_replay(ctx: click.Context, letter_id: str, reason: str | None, operator: str) -> None:
    """Send the original message to its original topic again, once: fix the cause first."""
    reply = _admin(ctx).replay_dead_letter(letter_id, reason=reason, operator=operator)
    click.echo(f"dead letter {reply['id']} replayed: its message is queued for {reply['topic']}, and "
               f"{reply.get('service', 'its service')} processes it again")
