"""``cdrflow calls`` and ``cdrflow charges unbilled``: what is not billed yet, the unbilled
total first, over the admin API (``services/admin/calls_api.py``), each with ``--json``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click
import orjson

from cdrflow.client import AdminClient


class UnbilledClient(AdminClient):
    """The admin API's unbilled views."""

    def customer_calls(self, customer: str, *, first: str | None = None, last: str | None = None,
                       unbilled: bool = False, limit: int | None = None, offset: int | None = None) -> dict[str, Any]:
        params = {k: v for k, v in {"from": first, "to": last, "unbilled": "true" if unbilled else None,
                                    "limit": limit, "offset": offset}.items() if v is not None}
        return self._call("GET", f"/customers/{customer}/calls", params=params or None)

    def unbilled_charges(self, customer: str) -> dict[str, Any]:
        return self._call("GET", f"/customers/{customer}/unbilled")


def _client(ctx: click.Context) -> UnbilledClient:
    return UnbilledClient.for_settings(ctx.obj)


def _print_json(value: Any) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[str] = ()) -> list[str]:
    """Lines of a plain table, each column as wide as its widest cell (a long destination or
    description widens its column; nothing is cut); columns named in ``right`` right-aligned."""
    cells = [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if h in right else v.ljust(w)
                         for h, v, w in zip(headers, values, widths, strict=True)).rstrip()

    return [line(list(headers)), *(line(r) for r in cells)]


@click.command()
@click.option("--customer", required=True, help="the customer's code")
@click.option("--from", "first", default=None, metavar="YYYY-MM-DD", help="first local day (operator's zone)")
@click.option("--to", "last", default=None, metavar="YYYY-MM-DD", help="last local day, included")
@click.option("--unbilled", is_flag=True, help="only unbilled calls: rated, on no invoice, not set aside")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000), help="calls shown")
@click.option("--offset", default=0, show_default=True, type=click.IntRange(0), help="calls skipped first")
@click.option("--json", "as_json", is_flag=True, help="print the API's JSON")
@click.pass_context
def calls(ctx: click.Context, customer: str, first: str | None, last: str | None, unbilled: bool, limit: int,
          offset: int, as_json: bool) -> None:
    """A customer's calls by start, with the unbilled total first (over the same days). Days
    are local days in the operator's zone; --to is included."""
    reply = _client(ctx).customer_calls(customer, first=first, last=last, unbilled=unbilled, limit=limit,
                                        offset=offset)
    if as_json:
        _print_json(reply)
        return
    click.echo(_calls_header(reply))
    if not reply["calls"]:
        click.echo("no calls" + (" unbilled" if unbilled else "") + _days(reply))
        return
    rows = [(c["start"], c["cli"], c["dialled"], c["destination"], c["band"], c["duration"], c["billable_seconds"],
             c["charge"], c["status"] + (" (set aside)" if c["set_aside"] else ""), c["invoice_number"], c["file_id"])
            for c in reply["calls"]]
    for text in table(("start", "CLI", "dialled", "destination", "band", "duration", "billable", "charge", "status",
                       "invoice", "file"), rows, right=("duration", "billable", "charge")):
        click.echo(text)
    shown = len(reply["calls"])
    if shown < reply["matched"]:
        click.echo(f"calls {reply['offset'] + 1}-{reply['offset'] + shown} of {reply['matched']}: "
                   f"--offset {reply['offset'] + shown} shows the next")


def _days(reply: dict[str, Any]) -> str:
    first, last = reply.get("from"), reply.get("to")
    if first and last:
        return f" from {first} to {last} (included)"
    if first:
        return f" from {first}"
    return f" to {last} (included)" if last else ""


def _calls_header(reply: dict[str, Any]) -> str:
    u = reply["unbilled"]
    micros = u["charge_micros"]
    exact = f"{'-' if micros < 0 else ''}{abs(micros) // 1_000_000}.{abs(micros) % 1_000_000:06d}"
    text = (f"{reply['customer']} unbilled{_days(reply)}: {u['calls']} call(s), {u['charge']} {reply['currency']} "
            f"(exact {exact})")
    if u["in_unrated_files"]:
        text += f"; {u['in_unrated_files']} of them in files not rated yet, which a run does not bill yet"
    return text


@click.command("unbilled")
@click.option("--customer", required=True, help="the customer's code")
@click.option("--json", "as_json", is_flag=True, help="print the API's JSON")
@click.pass_context
def unbilled_charges(ctx: click.Context, customer: str, as_json: bool) -> None:
    """A customer's charges and fixed fees not billed yet, the total first: recurring charges as
    its next billing run bills them, one-off charges not billed, priced fixed fees on no invoice."""
    reply = _client(ctx).unbilled_charges(customer)
    if as_json:
        _print_json(reply)
        return
    run = reply["next_run"]
    click.echo(f"{reply['customer']} unbilled charges: {reply['total']} {reply['currency']}; the next run "
               f"({run['period']}) bills {run['total']} {reply['currency']} of them")
    if not reply["items"]:
        click.echo("no charges or fixed fees unbilled")
        return
    rows = [(i["kind"], i["description"], i["quantity"], i["amount"], "yes" if i["next_run"] else "later",
             i["charge_id"] or i["carrier_transaction_id"]) for i in reply["items"]]
    for text in table(("kind", "description", "qty", "amount", "next run", "id"), rows, right=("qty", "amount")):
        click.echo(text)
