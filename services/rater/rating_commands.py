"""``cdrflow`` commands of rating: tariffs, schedules, rate sheets, customers and CLIs,
reconciliation, and the offline ``rate``. Reference data is written to the database
through services/rater/reference.py, each change logged, so the rater picks it up."""

from __future__ import annotations

import sys
import time

from pathlib import Path
from zoneinfo import ZoneInfo

import click

from cdrflow.cli_common import (add_list_command, add_show_command, admin_client, echo_listing, echo_object,
                                json_option, open_database)
from cdrflow.settings import Settings


@click.group()
def tariffs() -> None:
    """Tariffs: a customer's rate sheets, schedule and rounding."""


@tariffs.command("add")
@click.argument("code")
@click.option("--name", default=None)
@click.option("--schedule", default="uk-default", show_default=True)
@click.option("--split-bands", is_flag=True, help="price calls crossing a band boundary part by part")
@click.option("--places", type=click.IntRange(0, 6), default=4, show_default=True)
@click.option("--rounding", type=click.Choice(["half-up", "half-even", "half-down", "up", "down"]),
              default="half-up", show_default=True)
@click.option("--charge-unanswered", is_flag=True, help="price unanswered and 0 s calls instead of 0")
@click.pass_obj
def tariffs_add(settings: Settings, code: str, name: str | None, schedule: str, split_bands: bool, places: int,
                rounding: str, charge_unanswered: bool) -> None:
    from services.rater.plan import Tariff
    from services.rater.reference import save_tariff

    with open_database(settings).transaction() as session:
        save_tariff(session, Tariff(code, schedule, split_bands, places, rounding, charge_unanswered), name)
    click.echo(f"tariff {code} saved")


@tariffs.command("load")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_obj
def tariffs_load(settings: Settings, path: Path) -> None:
    """CSV tariff,name[,schedule,split_bands,places,rounding,charge_unanswered]."""
    from services.rater.reference import load_tariffs

    with open_database(settings).transaction() as session:
        click.echo(f"{load_tariffs(session, path)} tariff(s) saved")


add_list_command(tariffs, "tariffs",
                 ("tariff", "name", "schedule", "split_bands", "places", "rounding", "charge_unanswered"),
                 "no tariffs", "Tariffs: their peak schedule and rounding.")
add_show_command(tariffs, "tariffs", "code", "A tariff with its rate sheet versions and its customers.")


@click.group()
def schedules() -> None:
    """Peak time schedules (band,days,start,end rules)."""


@schedules.command("add")
@click.argument("name")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--holidays-as-weekend", is_flag=True)
@click.option("--region", default="GB-ENG", show_default=True, help="public holidays of COUNTRY-SUBDIVISION")
@click.pass_obj
def schedules_add(settings: Settings, name: str, path: Path, holidays_as_weekend: bool, region: str) -> None:
    from services.rater.reference import save_schedule

    with open_database(settings).transaction() as session:
        save_schedule(session, name, path.read_text(encoding="utf-8-sig"), holidays_as_weekend=holidays_as_weekend,
                      holiday_region=region)
    click.echo(f"schedule {name} saved")


add_list_command(schedules, "schedules", ("schedule", "built_in", "holidays_as_weekend", "holiday_region", "rules"),
                 "no schedules", "Peak schedules (the built-in uk-default first), with how many rules each has.")
add_show_command(schedules, "schedules", "name", "A peak schedule with its rules (band, days, start, end).")


@click.group()
def rates() -> None:
    """Rate sheets: retail per tariff (optionally per carrier), wholesale per carrier."""


@rates.command("load")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tariff", default=None, help="the retail tariff this sheet prices")
@click.option("--wholesale", is_flag=True, help="a carrier's wholesale sheet (its cost to us)")
@click.option("--carrier", default="", help="retail: override the tariff for this carrier's calls only")
@click.option("--direction", type=click.Choice(["outbound", "inbound"]), default="outbound", show_default=True)
@click.pass_obj
def rates_load(settings: Settings, path: Path, tariff: str | None, wholesale: bool, carrier: str,
               direction: str) -> None:
    """Validate a rate sheet and make it the active version (problems are listed by line)."""
    from cdrflow.filestore import FileStore
    from services.rater.reference import load_rate_sheet

    if wholesale == bool(tariff) or (wholesale and not carrier):
        raise click.UsageError("give --tariff T for a retail sheet, or --wholesale --carrier C")
    kind, owner = ("wholesale", carrier) if wholesale else ("retail", tariff)
    with open_database(settings).transaction() as session:
        version = load_rate_sheet(session, FileStore(settings.file_store_dir), path.read_bytes(),
                                  source_name=path.name, kind=kind, owner=owner or "", direction=direction,
                                  carrier="" if wholesale else carrier)
        click.echo(f"{kind} sheet {owner} {direction}{' for ' + carrier if carrier and not wholesale else ''}: "
                   f"version {version.version} active, {version.rows} rates")


@rates.command("list")
@click.option("--kind", type=click.Choice(["retail", "wholesale"]), default=None)
@click.option("--owner", default=None, help="only this tariff's (retail) or carrier's (wholesale) sheets")
@json_option
@click.pass_context
def rates_list(ctx: click.Context, kind: str | None, owner: str | None, as_json: bool) -> None:
    """Rate sheet versions, oldest first; 'active' marks the ones rating calls now."""
    echo_listing(admin_client(ctx).listing("rate-sheets", kind=kind, owner=owner),
                 ("id", "kind", "owner", "direction", "carrier", "version", "active", "rows", "loaded_at", "name"),
                 as_json, "no rate sheets")


@rates.command("show")
@click.argument("sheet_id")
@click.option("--limit", default=None, help="at most this many rates (default 1000)")
@json_option
@click.pass_context
def rates_show(ctx: click.Context, sheet_id: str, limit: str | None, as_json: bool) -> None:
    """A rate sheet version (its id from 'rates list') with its rates, line by line."""
    echo_object(admin_client(ctx).shown("rate-sheets", sheet_id, limit=limit), as_json)


@click.group()
def customers() -> None:
    """Customers and the CLIs that identify them."""


add_list_command(customers, "customers",
                 ("customer", "name", "tariff", "billing_schedule", "billing_email", "tax_code", "currency", "clis"),
                 "no customers", "Customers: tariff, billing schedule and email, tax, and how many CLIs.")
add_show_command(customers, "customers", "code", "A customer with its billing terms and CLIs.")


def _billing_terms(command):  # type: ignore[no-untyped-def]
    """The billing options of ``customers add`` and ``customers edit`` (services/scheduler/customers.py)."""
    options = [
        click.option("--email", default=None, help="billing email: where invoices are sent"),
        click.option("--schedule", default=None,
                     help="billing schedule: weekly[:DAY], monthly[:D] or quarterly[:M[:D]] (add: default monthly)"),
        click.option("--tax", "tax_code", type=click.Choice(["standard", "zero", "exempt"]), default=None,
                     help="VAT: standard (20%), zero-rated or exempt (add: default standard)"),
        click.option("--currency", "currency_code", default=None, help="invoice currency (add: default GBP)"),
        click.option("--address", default=None, help="postal address; lines separated by newlines or \\n"),
        click.option("--terms", "terms_days", type=int, default=None, help="payment terms in days (add: default 30)"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@customers.command("add")
@click.argument("code")
@click.option("--name", required=True)
@click.option("--tariff", required=True)
@_billing_terms
@click.option("--cli", "cli_texts", multiple=True, help="a CLI: +44…, a prefix +44…*, a range FROM-TO or a code")
@click.pass_obj
def customers_add(settings: Settings, code: str, name: str, tariff: str, cli_texts: tuple[str, ...],
                  **terms: str | int | None) -> None:
    from services.rater.reference import add_cli_with_warnings, save_customer
    from services.scheduler.customers import set_billing_terms

    warnings: list[str] = []
    with open_database(settings).transaction() as session:
        customer = save_customer(session, code, name, tariff, billing_email=None)
        set_billing_terms(session, customer, **terms)  # type: ignore[arg-type]
        session.flush()
        for text in cli_texts:
            warnings += add_cli_with_warnings(session, code, text).warnings
    click.echo(f"customer {code} saved with {len(cli_texts)} CLI(s)")
    _echo_warnings(warnings)


def _echo_warnings(warnings: list[str] | tuple[str, ...]) -> None:
    """CLIs inside another customer's wider CLI (or holding a narrower one): stored, but said."""
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)


@customers.command("edit")
@click.argument("code")
@click.option("--name", default=None)
@click.option("--tariff", default=None)
@_billing_terms
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def customers_edit(settings: Settings, code: str, name: str | None, tariff: str | None, as_json: bool,
                   **terms: str | int | None) -> None:
    """Change a customer's name, tariff or billing terms; what is not given stays as it is."""
    from cdrflow.db.models import Customer
    from cdrflow.errors import InputError
    from services.rater.reference import save_customer
    from services.scheduler.customers import set_billing_terms

    with open_database(settings).transaction() as session:
        customer = session.get(Customer, code)
        if customer is None:
            raise InputError(f"no customer {code!r}: add it with 'cdrflow customers add'")
        if name is not None or tariff is not None:
            save_customer(session, code, name or customer.name, tariff or customer.tariff,
                          billing_email=customer.billing_email, billing_schedule=customer.billing_schedule)
        changed = set_billing_terms(session, customer, **terms)  # type: ignore[arg-type]
        view = {"customer": code, "name": customer.name, "tariff": customer.tariff,
                "billing_schedule": customer.billing_schedule, "tax_code": customer.tax_code,
                "currency": customer.currency, "address": customer.address, "billing_email": customer.billing_email,
                "payment_terms_days": customer.payment_terms_days}
    if as_json:
        import orjson

        click.echo(orjson.dumps(view).decode())
        return
    click.echo(f"customer {code} saved" + (f": {', '.join(changed)} changed" if changed else ""))


@customers.command("load")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_obj
def customers_load(settings: Settings, path: Path) -> None:
    """CSV customer,name,tariff,cli[,kind,carrier,effective_from,effective_to,billing_email]: one
    line per CLI. Every line is checked first; any problem loads nothing (problems listed by line)."""
    from services.rater.reference import load_customers

    with open_database(settings).transaction() as session:
        loaded = load_customers(session, path)
    click.echo(str(loaded))
    _echo_warnings(loaded.warnings)


@click.group()
def clis() -> None:
    """CLIs of customers."""


@clis.command("add")
@click.argument("customer")
@click.argument("cli")
@click.option("--kind", type=click.Choice(["ddi", "prefix", "range", "account", "trunk"]), default=None)
@click.option("--carrier", default=None, help="only this carrier's calls")
@click.option("--from", "effective_from", type=click.DateTime(["%Y-%m-%d"]), default=None)
@click.option("--to", "effective_to", type=click.DateTime(["%Y-%m-%d"]), default=None, help="exclusive")
@click.pass_obj
def clis_add(settings: Settings, customer: str, cli: str, kind: str | None, carrier: str | None,
             effective_from, effective_to) -> None:  # type: ignore[no-untyped-def]
    """Add a CLI; calls waiting in reconciliation are re-rated by the rater."""
    from services.rater.reference import add_cli_with_warnings

    with open_database(settings).transaction() as session:
        added = add_cli_with_warnings(session, customer, cli, kind=kind, carrier=carrier,
                                      effective_from=effective_from.date() if effective_from else None,
                                      effective_to=effective_to.date() if effective_to else None)
        click.echo(f"{added.row.kind} {added.row.value} added to {customer}")
    _echo_warnings(added.warnings)


CLI_COLUMNS = ("customer", "kind", "value", "carrier", "effective_from", "effective_to")


@clis.command("list")
@click.option("--customer", default=None, help="only this customer's CLIs")
@json_option
@click.pass_context
def clis_list(ctx: click.Context, customer: str | None, as_json: bool) -> None:
    """CLIs of customers (effective_to is exclusive)."""
    echo_listing(admin_client(ctx).listing("clis", customer=customer), CLI_COLUMNS, as_json, "no CLIs")


add_show_command(clis, "clis", "cli",
                 "A CLI as it was added (a DDI, +44…* prefix, FROM-TO range or code) and whose it is.")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="the groups as JSON, as GET /recon gives them")
@click.pass_obj
def recon(settings: Settings, as_json: bool) -> None:
    """Calls that match no customer or no rate, and fixed fees that match no customer or no fee
    sheet row, grouped, with what they cost us."""
    from services.rater.recon import fee_reconciliation, reconciliation, recon_view

    with open_database(settings).transaction() as session:
        groups, fees = reconciliation(session), fee_reconciliation(session)
    if as_json:
        import orjson

        click.echo(orjson.dumps(recon_view(groups, fees), option=orjson.OPT_INDENT_2).decode())
        return
    if not groups and not fees:
        click.echo("nothing in reconciliation")
        return
    if groups:
        click.echo(f"{'status':9} {'CLI / tariff: destination':32} {'carrier':10} {'calls':>6} {'minutes':>9} {'cost':>10}  reason")
    for g in groups:
        click.echo(f"{g.status:9} {g.key:32} {g.carrier:10} {g.calls:>6} {g.seconds / 60:>9.1f} {g.cost:>10.4f}  "
                   f"{g.example_reason}")
    if fees:
        click.echo(f"{'' if not groups else chr(10)}{'status':9} {'fixed fee reference':32} {'carrier':10} {'fees':>6} "
                   f"{'':>9} {'cost':>10}  reason")
    for f in fees:
        click.echo(f"{f.status:9} {f.reference:32} {f.carrier:10} {f.fees:>6} {'':>9} {f.cost:>10.4f}  "
                   f"{f.example_reason}")


@click.command()
@click.option("--rates", "rates_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--customers", "customers_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--schedule", "schedule_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "fmt", default="generic-cdr", show_default=True)
@click.option("--direction", type=click.Choice(["outbound", "inbound"]), default="outbound", show_default=True)
@click.option("--tz", "zone", default=None, help="the operator's time zone (default: CDRFLOW_TIMEZONE)")
@click.option("--split-bands", is_flag=True)
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.argument("cdr_files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_obj
def rate(settings: Settings, rates_path: Path, customers_path: Path | None, schedule_path: Path | None, fmt: str,
         direction: str, zone: str | None, split_bands: bool, output: Path, cdr_files: tuple[Path, ...]) -> None:
    """Rate CDR files offline against a rate sheet; write OUTPUT.csv and print a summary."""
    from services.rater.offline import offline_plan, rate_files
    from services.rater.plan import RatingPlan

    started = time.perf_counter()
    the_zone = ZoneInfo(zone or settings.timezone)

    def plan() -> RatingPlan:  # built in its own thread while the first calls are read
        return offline_plan(rates_path, customers=customers_path, schedule=schedule_path, direction=direction,
                            zone=the_zone, split_bands=split_bands)

    show_progress = sys.stderr.isatty()
    total = sum(_count_lines(p) for p in cdr_files) if show_progress else 0
    try:
        with output.open("wb") as out, click.progressbar(length=total, label="rating", file=sys.stderr,
                                                         hidden=not show_progress) as bar:
            summary = rate_files(cdr_files, fmt, plan, direction=direction, out=out, zone=the_zone,
                                 on_rows=bar.update)
    except BaseException:
        output.unlink(missing_ok=True)  # a bad rate sheet or CDR file leaves no half-written output
        raise
    elapsed = time.perf_counter() - started
    c = summary.counts
    click.echo(f"{summary.rows} rows in {elapsed:.2f}s: {c['rated']} rated, {c['unmatched']} unmatched, "
               f"{c['unrated']} unrated, {c['rejected']} rejected; total charge {summary.charge:.4f}, "
               f"cost {summary.cost:.4f}, margin {summary.charge - summary.cost:.4f}")


def _count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))


