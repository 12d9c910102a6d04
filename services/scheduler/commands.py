"""``cdrflow bill`` and ``cdrflow charges``: billing runs by hand and the charges defined in
cdrflow, over the admin API (the same ``close_run`` path the scheduler takes)."""

from __future__ import annotations

import getpass
import sys
from typing import Any

import click
import orjson

from cdrflow.cli_files import QUEUED_NOTE
from cdrflow.errors import CdrflowError, InputError

_operator = click.option("--operator", envvar="CDRFLOW_OPERATOR", default=getpass.getuser, show_default="you",
                         help="who acts (recorded)")
_json = click.option("--json", "as_json", is_flag=True, help="print JSON instead of text")


def _admin(ctx: click.Context):  # type: ignore[no-untyped-def]
    from cdrflow.client import AdminClient

    return AdminClient.for_settings(ctx.obj)


def _print_json(value: Any) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


# --- billing runs ------------------------------------------------------------------


@click.command()
@click.option("--customer", "customer_codes", multiple=True, help="bill this customer (repeatable)")
@click.option("--schedule", "schedule_text", default=None, help="bill every customer on this billing schedule")
@click.option("--all", "every", is_flag=True, help="bill every customer")
@click.option("--period", default=None,
              help="the period to bill (its label, e.g. 2026-11, 2026-Q4, 2026-W47, or first day); "
                   "default: the latest ended period of each customer's schedule")
@click.option("--force", is_flag=True, help="bill a period that has not ended yet (needs --reason)")
@click.option("--reason", default=None, help="why a period not yet ended is billed (recorded on the run)")
@_operator
@_json
@click.pass_context
def bill(ctx: click.Context, customer_codes: tuple[str, ...], schedule_text: str | None, every: bool,
         period: str | None, force: bool, reason: str | None, operator: str, as_json: bool) -> None:
    """Close billing runs by hand: the invoicer issues each customer's invoice for the period.
    A run closed before makes nothing new; the reply names the invoice it made."""
    if sum((bool(customer_codes), schedule_text is not None, every)) != 1:
        raise click.UsageError("give --customer C, --schedule NAME or --all")
    if force and not (reason or "").strip():
        raise click.UsageError("--force needs --reason: why bill a period that has not ended (recorded)")
    client = _admin(ctx)
    codes = list(customer_codes) if customer_codes else _customers(client.customers(), schedule_text)
    replies: list[dict[str, Any]] = []
    for code in codes:
        try:
            replies.append(client.close_run(code, period, force=force, reason=reason, operator=operator))
        except CdrflowError as exc:  # refused (AdminApiError) or unreachable: reported per customer
            replies.append({"customer": code, "error": str(exc)})
    if as_json:
        _print_json(replies)
    else:
        for reply in replies:
            if "error" in reply:
                click.echo(f"{reply['customer']}: not billed: {reply['error']}", err=True)
            elif reply.get("already"):
                made = f"invoice {reply['invoice_number']}" if reply.get("invoice_number") else "no invoice yet"
                click.echo(f"{reply['customer']} {reply['period']}: closed already by {reply['closed_by']}; {made} "
                           "(nothing new made)")
            else:
                click.echo(f"{reply['customer']} {reply['period']}: billing run {reply['run_id']} closed"
                           + ("" if reply.get("announced", True) else QUEUED_NOTE))
    if any("error" in r for r in replies):
        sys.exit(1)


def _customers(customers: list[dict[str, Any]], schedule_text: str | None) -> list[str]:
    """Every customer's code, or those on the schedule ``schedule_text`` (compared as schedules:
    ``monthly:1`` is ``monthly``)."""
    from services.invoicer.periods import BillingSchedule

    if schedule_text is None:
        return [c["customer"] for c in customers]
    wanted = BillingSchedule.parse(schedule_text)
    codes = []
    for c in customers:
        try:
            if BillingSchedule.parse(c.get("billing_schedule") or "monthly") == wanted:
                codes.append(c["customer"])
        except InputError:  # a customer with a broken schedule is on no schedule
            continue
    if not codes:
        raise click.UsageError(f"no customer is on billing schedule {wanted} ({wanted.describe()})")
    return codes


# --- charges defined in cdrflow -----------------------------------------------------


@click.group()
def charges() -> None:
    """Recurring and one-off charges defined in cdrflow (see docs/billing-schedules.md)."""


@charges.command("add")
@click.option("--customer", required=True)
@click.option("--description", required=True, help="what the customer reads on the invoice")
@click.option("--amount", required=True, help="per charge period and unit, e.g. 12.50; negative for a credit")
@click.option("--quantity", default="1", show_default=True, help="a whole number, at least 1")
@click.option("--frequency", required=True, type=click.Choice(["monthly", "quarterly", "yearly", "once"]))
@click.option("--start", required=True, metavar="YYYY-MM-DD", help="first day charged (a one-off's day)")
@click.option("--end", default=None, metavar="YYYY-MM-DD", help="first day no longer charged (exclusive)")
@click.option("--tax", "tax_code", type=click.Choice(["standard", "zero", "exempt"]), default=None,
              help="default: the customer's")
@_operator
@_json
@click.pass_context
def charges_add(ctx: click.Context, customer: str, description: str, amount: str, quantity: str, frequency: str,
                start: str, end: str | None, tax_code: str | None, operator: str, as_json: bool) -> None:
    """Add a charge to a customer; billing runs bill it from then on."""
    body: dict[str, Any] = {"description": description, "amount": amount, "frequency": frequency, "start": start,
                            "quantity": int(quantity) if quantity.strip().isdigit() else quantity}
    if end:
        body["end"] = end
    if tax_code:
        body["tax_code"] = tax_code
    charge = _admin(ctx).add_charge(customer, body, operator=operator)
    if as_json:
        _print_json(charge)
    else:
        click.echo(f"charge {charge['id']} added to {customer}: {_describe(charge)}")


@charges.command("list")
@click.option("--customer", default=None)
@_json
@click.pass_context
def charges_list(ctx: click.Context, customer: str | None, as_json: bool) -> None:
    """Charges, per customer, with how far runs have billed them (billed until, exclusive)."""
    rows = _admin(ctx).charges(customer)
    if as_json:
        _print_json(rows)
        return
    if not rows:
        click.echo("no charges")
        return
    click.echo(f"{'id':>5}  {'customer':10} {'amount':>10} {'qty':>4}  {'frequency':9} {'start':10} {'end':10} "
               f"{'billed to':10} description")
    for c in rows:
        click.echo(f"{c['id']:>5}  {c['customer']:10} {c['amount']:>10} {c['quantity']:>4}  {c['frequency']:9} "
                   f"{c['start']:10} {c['end'] or '-':10} {c['billed_until'] or '-':10} {c['description']}")


@charges.command("show")
@click.argument("charge_id")
@_json
@click.pass_context
def charges_show(ctx: click.Context, charge_id: str, as_json: bool) -> None:
    """A charge: amount, frequency, start and end, and how far runs have billed it."""
    from cdrflow.cli_common import echo_object

    echo_object(_admin(ctx).shown("charges", charge_id), as_json)


@charges.command("end")
@click.argument("charge_id")
@click.option("--on", "on", required=True, metavar="YYYY-MM-DD", help="first day no longer charged (exclusive)")
@click.option("--reason", required=True, help="why: recorded with who and when")
@_operator
@_json
@click.pass_context
def charges_end(ctx: click.Context, charge_id: str, on: str, reason: str, operator: str, as_json: bool) -> None:
    """End a recurring charge; days billed in advance past the end are credited at the next run."""
    charge = _admin(ctx).end_charge(charge_id, on, reason, operator=operator)
    if as_json:
        _print_json(charge)
    else:
        click.echo(f"charge {charge['id']} of {charge['customer']} ends on {charge['end']} (first day not charged)")


def _describe(c: dict[str, Any]) -> str:
    span = f"on {c['start']}" if c["frequency"] == "once" else (
        f"{c['frequency']} from {c['start']}" + (f" to {c['end']}" if c["end"] else ""))
    return f"{c['description']}, {c['amount']} x {c['quantity']} {span}"
