"""``cdrflow invoices …``: list, show, pdf, csv and credit, over the admin API (``services/admin/
invoices_api.py``), each with ``--json``. The sender's ``send`` and ``deliveries`` join the group
here, so the CLI root registers one ``invoices`` group."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

import click
import orjson

from cdrflow.client import AdminClient

QUEUED_NOTE = "  (the broker is not reachable: the request is stored and goes on by itself when it is back)"


class InvoicesClient(AdminClient):
    """The admin API's invoice endpoints."""

    def invoice_list(self, customer: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        params = {k: v for k, v in {"customer": customer, "status": status}.items() if v}
        return self._call("GET", "/invoices", params=params or None)

    def invoice(self, number: str) -> dict[str, Any]:
        return self._call("GET", f"/invoices/{number}")

    def credit(self, number: str, reason: str, operator: str | None = None) -> dict[str, Any]:
        """Ask for a credit note; refused (AdminApiError) for an unknown or credited invoice."""
        headers = {"x-operator": operator} if operator else None
        return self._call("POST", f"/invoices/{number}/credit", json={"reason": reason}, headers=headers)

    def document(self, number: str, what: str) -> bytes:
        """The invoice's ``pdf`` or ``calls.csv``, as bytes."""
        return self._response("GET", f"/invoices/{number}/{what}").content


def _client(ctx: click.Context) -> InvoicesClient:
    return InvoicesClient.for_settings(ctx.obj)


def _json(value: Any) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def _money(view: dict[str, Any], amount: str | None) -> str:
    return "-" if amount is None else f"{amount} {view.get('currency') or ''}".rstrip()


def _last_day(view: dict[str, Any]) -> str:
    """The period as people read it: its last day inclusive (stored ends are exclusive)."""
    from datetime import date, timedelta

    return (date.fromisoformat(view["period_end"]) - timedelta(days=1)).isoformat()


@click.group()
def invoices() -> None:
    """Invoices: list, show, pdf, csv, credit (and send, deliveries)."""


@invoices.command("list")
@click.option("--customer", default=None, help="only this customer's invoices")
@click.option("--status", type=click.Choice(["issued", "credited"]), default=None)
@click.option("--json", "as_json", is_flag=True, help="print the API's JSON")
@click.pass_context
def invoices_list(ctx: click.Context, customer: str | None, status: str | None, as_json: bool) -> None:
    """Issued invoices, oldest first, with their totals and whether a credit note voided them."""
    from cdrflow.cli_common import echo_listing

    found = _client(ctx).invoice_list(customer, status)
    # The table shows the period as people read it, last day inclusive; the JSON keeps the stored
    # exclusive end (period_end), as the API and the invoice-issued event give it.
    rows = found if as_json else [inv | {"period": f"{inv['period_start']}..{_last_day(inv)}",
                                         "credit_note": (inv.get("credit_note") or {}).get("credit_note_number")}
                                  for inv in found]
    echo_listing(rows, ("invoice_number", "customer", "period", "status", "net", "tax", "total",
                        "currency", "credit_note"), as_json, "no invoices")


@invoices.command("show")
@click.argument("number")
@click.option("--json", "as_json", is_flag=True, help="print the API's JSON")
@click.pass_context
def invoices_show(ctx: click.Context, number: str, as_json: bool) -> None:
    """One invoice: its lines, net, VAT, total, status and credit note."""
    inv = _client(ctx).invoice(number)
    if as_json:
        _json(inv)
        return
    click.echo(f"invoice   {inv['invoice_number']} ({inv['status']})")
    click.echo(f"customer  {inv['customer']}")
    click.echo(f"period    {inv['period_start']} .. {_last_day(inv)}")
    click.echo(f"issued    {inv.get('issued_on') or inv['issued_at'][:10]}   due {inv.get('due_on') or '-'}")
    click.echo("")
    for line in inv["lines"]:
        click.echo(f"  {line['description'][:40]:40} x{line['quantity']:<6} {line.get('tax_code') or '':9} "
                   f"{line['amount']:>12}")
    click.echo("")
    for label, key in (("net", "net"), ("VAT", "tax"), ("total", "total")):
        click.echo(f"{label:9} {_money(inv, inv[key])}")
    if note := inv.get("credit_note"):
        click.echo(f"\ncredited by {note['credit_note_number']} ({_money(inv, note['total'])}) on "
                   f"{note['issued_at'][:16]} by {note['operator']}: {note['reason']}")


def _download(ctx: click.Context, number: str, what: str, output: Path, as_json: bool) -> None:
    data = _client(ctx).document(number, what)
    try:
        output.write_bytes(data)
    except OSError as exc:
        raise click.ClickException(f"can't write {output}: {exc.strerror}") from exc
    if as_json:
        _json({"invoice_number": number, "path": str(output), "bytes": len(data)})
    else:
        click.echo(f"{number}: {len(data)} bytes written to {output}")


_output = click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), required=True,
                       help="the file to write")


@invoices.command("pdf")
@click.argument("number")
@_output
@click.option("--json", "as_json", is_flag=True, help="print what was written as JSON")
@click.pass_context
def invoices_pdf(ctx: click.Context, number: str, output: Path, as_json: bool) -> None:
    """Write the invoice's PDF (rendered once, then kept in the file store)."""
    _download(ctx, number, "pdf", output, as_json)


@invoices.command("csv")
@click.argument("number")
@_output
@click.option("--json", "as_json", is_flag=True, help="print what was written as JSON")
@click.pass_context
def invoices_csv(ctx: click.Context, number: str, output: Path, as_json: bool) -> None:
    """Write the CSV of the invoice's calls (times in the operator's zone, spreadsheet-safe)."""
    _download(ctx, number, "calls.csv", output, as_json)


@invoices.command("credit")
@click.argument("number")
@click.option("--reason", required=True, help="why: recorded with who and when, printed nowhere else")
@click.option("--operator", envvar="CDRFLOW_OPERATOR", default=getpass.getuser, show_default="you",
              help="who decides (recorded)")
@click.option("--json", "as_json", is_flag=True, help="print the API's JSON")
@click.pass_context
def invoices_credit(ctx: click.Context, number: str, reason: str, operator: str, as_json: bool) -> None:
    """Void an issued invoice in full with a credit note (its own number sequence): its calls and
    charges become unbilled again and go on the customer's next invoice."""
    reply = _client(ctx).credit(number, reason, operator)
    if as_json:
        _json(reply)
        return
    click.echo(f"credit note for {number} requested; 'cdrflow invoices show {number}' shows it once issued"
               + ("" if reply.get("announced", True) else QUEUED_NOTE))


from services.sender.commands import invoices_deliveries, invoices_send  # noqa: E402  (the sender's)

invoices.add_command(invoices_send)
invoices.add_command(invoices_deliveries)
