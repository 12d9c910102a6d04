"""``cdrflow invoices send`` and ``cdrflow invoices deliveries``: an invoice's (or credit
note's) emails, over the admin API. Registered on the ``invoices`` group by its owner
(``services/invoicer/commands.py``)."""

from __future__ import annotations

import getpass
import json
from typing import Any

import click

from cdrflow.client import AdminClient
from services.sender.delivery import STATUSES

COLUMNS = ("ID", "DOCUMENT", "STATUS", "TO", "ATTEMPTS", "SENT", "NEXT TRY", "REQUESTED BY", "LAST ERROR")


class DeliveryClient(AdminClient):
    """The admin API's delivery endpoints (``services/admin/delivery_api.py``)."""

    def send_invoice(self, number: str, to: str | None = None, operator: str | None = None) -> dict[str, Any]:
        headers = {"x-operator": operator} if operator else None
        return self._call("POST", f"/invoices/{number}/send", json={"to": to} if to else {}, headers=headers)

    def deliveries(self, number: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        """A document's deliveries, oldest first; without a number, the newest of all documents."""
        if number:
            return self._call("GET", f"/invoices/{number}/deliveries")
        return self._call("GET", "/deliveries", params={"status": status} if status else None)


def _client(ctx: click.Context) -> DeliveryClient:
    return DeliveryClient.for_settings(ctx.obj)


def _minute(iso: str | None) -> str:
    return "-" if not iso else iso[:16].replace("T", " ")


def delivery_rows(deliveries: list[dict[str, Any]]) -> list[str]:
    """Header and one line per delivery, columns aligned; the last error last, uncut."""
    rows = [COLUMNS] + [(str(d["id"]), d["document_number"], d["status"], d["to"] or "-", str(d["attempts"]), _minute(d["sent_at"]),
                         _minute(d["next_attempt_at"]), d["requested_by"], d["last_error"] or "")
                        for d in deliveries]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS) - 1)]
    return ["  ".join([*(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)), r[-1]]).rstrip()
            for r in rows]


@click.command("send")
@click.argument("number")
@click.option("--to", "to", default=None, help="send to this address instead of the customer's billing email")
@click.option("--json", "as_json", is_flag=True, help="print the API's JSON")
@click.pass_context
def invoices_send(ctx: click.Context, number: str, to: str | None, as_json: bool) -> None:
    """Email an invoice or credit note again, on purpose: a new delivery with its own Message-ID.

    The sender never resends by itself (a mail left 'uncertain' may have gone already): this is
    how a customer gets it again."""
    reply = _client(ctx).send_invoice(number, to, operator=getpass.getuser())
    if as_json:
        click.echo(json.dumps(reply, indent=2))
        return
    click.echo(f"{number}: delivery {reply['id']} to {reply['to']} queued ({reply['message_id']}); "
               f"see 'cdrflow invoices deliveries {number}'")


@click.command("deliveries")
@click.argument("number", required=False)
@click.option("--status", type=click.Choice(STATUSES), default=None,
              help="without NUMBER: only deliveries in this status (e.g. failed, uncertain)")
@click.option("--json", "as_json", is_flag=True, help="print the API's JSON")
@click.pass_context
def invoices_deliveries(ctx: click.Context, number: str | None, status: str | None, as_json: bool) -> None:
    """An invoice's or credit note's emails, or (without NUMBER) the newest of all: status
    (queued, sending, sent, failed, uncertain), attempts, the last error and the next try."""
    if number and status:
        raise click.UsageError("--status filters the list of all deliveries: give NUMBER or --status, not both")
    deliveries = _client(ctx).deliveries(number, status)
    if as_json:
        click.echo(json.dumps(deliveries, indent=2))
        return
    if not deliveries:
        click.echo(f"{number or 'all documents'}: no deliveries" + (f" {status}" if status else ""))
        return
    for line in delivery_rows(deliveries):
        click.echo(line)
