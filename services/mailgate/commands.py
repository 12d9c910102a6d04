"""``cdrflow mail …``: the mail gateway's operator commands. They act on the database directly,
like ``cdrflow carriers`` (the gateway rereads carriers' rules within seconds, no restart)."""

from __future__ import annotations

import click
import orjson

from cdrflow.cli_common import echo_json, json_option, open_database
from cdrflow.settings import Settings


@click.group()
def mail() -> None:
    """The mail gateway: addresses, carriers' mail rules, accepted messages (see docs/mailgate.md)."""


@mail.command("addresses")
@json_option
@click.pass_obj
def mail_addresses(settings: Settings, as_json: bool) -> None:
    """The addresses carriers can send files to, and each carrier's mail rules."""
    from services.mailgate.carriers import mail_rules

    d = settings.mail_domain
    if as_json:
        with open_database(settings).transaction() as session:
            echo_json({"any_carrier": f"cdrs@{d}", "carriers": [
                {"carrier": rule.carrier, "addresses": [f"{rule.carrier.lower()}.{box}@{d}"
                                                        for box in ("cdrs", "daily", "monthly", "sdr")],
                 "file_name_pattern": rule.file_name_pattern, "senders": rule.mail_senders}
                for rule in mail_rules(session)]})
        return
    click.echo(f"cdrs@{d}  (carrier found from the file name by the patterns below)")
    with open_database(settings).transaction() as session:
        for rule in mail_rules(session):
            c = rule.carrier.lower()
            click.echo(f"{c}.cdrs@{d} {c}.daily@{d} {c}.monthly@{d} {c}.sdr@{d}")
            click.echo(f"    pattern: {rule.file_name_pattern or '-'}   senders: {rule.mail_senders or 'anyone'}")


@mail.command("rules")
@click.argument("carrier")
@click.option("--file-name-pattern", default=None,
              help="regular expression (case-insensitive) that this carrier's file names match; '' clears it")
@click.option("--senders", default=None,
              help="addresses or @domains allowed to mail this carrier's files, space separated; '' allows anyone")
@click.pass_obj
def mail_rules_command(settings: Settings, carrier: str, file_name_pattern: str | None,
                       senders: str | None) -> None:
    """Set a carrier's file-name pattern (for cdrs@) and sender allow-list."""
    from services.mailgate.carriers import UNCHANGED, set_mail_rules

    with open_database(settings).transaction() as session:
        rules = set_mail_rules(session, carrier,
                               UNCHANGED if file_name_pattern is None else file_name_pattern,
                               UNCHANGED if senders is None else senders)
    click.echo(f"carrier {rules.carrier}: pattern {rules.file_name_pattern or '-'}, "
               f"senders {rules.mail_senders or 'anyone'}")


@mail.command("messages")
@click.option("--status", type=click.Choice(["pending", "processed", "failed"]), default=None)
@click.option("--limit", type=int, default=50, show_default=True)
@json_option
@click.pass_obj
def mail_messages(settings: Settings, status: str | None, limit: int, as_json: bool) -> None:
    """Messages the gateway accepted, newest first, with the files they became and parts ignored."""
    from services.mailgate.carriers import recent_messages

    with open_database(settings).transaction() as session:
        messages = recent_messages(session, status, limit)
        if as_json:
            echo_json([{"message_id": m.id, "received_at": m.received_at.isoformat(), "status": m.status,
                        "sender": m.sender, "recipients": orjson.loads(m.recipients),
                        "outcome": orjson.loads(m.outcome) if m.outcome else {}} for m in messages])
            return
        for m in messages:
            outcome = orjson.loads(m.outcome) if m.outcome else {}
            click.echo(f"{m.id}  {m.received_at:%Y-%m-%d %H:%M:%S}  {m.status:9} from {m.sender} to "
                       f"{', '.join(orjson.loads(m.recipients))}")
            for f in outcome.get("files", []):
                click.echo(f"    file    {f['file_id']}  {f['carrier']} {f['kind']} {f['period']}  {f['name']}")
            for p in outcome.get("ignored", []):
                click.echo(f"    ignored {p['name']}: {p['reason']}")
            if outcome.get("error"):
                click.echo(f"    error   {outcome['error']}")


@mail.command("retry")
@click.argument("message_id")
@click.pass_obj
def mail_retry(settings: Settings, message_id: str) -> None:
    """Announce a failed message's files again, once its carrier's rules are fixed."""
    from services.mailgate.carriers import retry_message

    with open_database(settings).transaction() as session:
        retry_message(session, message_id)
    click.echo(f"mail message {message_id} queued again")
