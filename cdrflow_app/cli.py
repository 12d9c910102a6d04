"""The ``cdrflow`` command. Operator commands go through the admin API; set-up commands act locally."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import click

from cdrflow.errors import CdrflowError
from cdrflow.cli_common import add_list_command, add_show_command, open_database
from cdrflow.settings import Settings, load_settings

LOOP_SERVICES = ("dedupe", "parser", "rater", "invoicer", "sender")
SERVED_SERVICES = ("admin", "collector", "mailgate", "scheduler")
"""Services with their own serving loop (HTTP, SMTP, polling) rather than a Kafka consumer loop."""
NOT_YET: dict[str, str] = {}


class CdrflowGroup(click.Group):
    """Turns any CdrflowError into a one-line message and exit status 1 (no traceback for operators)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CdrflowError as exc:
            click.echo(f"cdrflow: error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=CdrflowGroup)
@click.pass_context
def main(ctx: click.Context) -> None:
    """cdrflow: telecom billing pipeline (files -> dedupe -> parser -> rater -> invoicer) on Kafka."""
    ctx.obj = load_settings()
    if ctx.invoked_subcommand != "run":
        from cdrflow.log import configure_logging

        configure_logging("WARNING")


def _admin(ctx: click.Context):  # type: ignore[no-untyped-def]
    from cdrflow.client import AdminClient

    return AdminClient.for_settings(ctx.obj)


# --- set-up -----------------------------------------------------------------------


@main.group()
def kafka() -> None:
    """The project's own single-node Kafka broker (not used when CDRFLOW_KAFKA_BOOTSTRAP is set)."""


def _local_broker(settings: Settings):  # type: ignore[no-untyped-def]
    from cdrflow.localkafka import LocalKafka

    if not settings.uses_local_broker:
        raise click.UsageError(f"CDRFLOW_KAFKA_BOOTSTRAP={settings.kafka_bootstrap}: an external cluster is "
                               "configured, so cdrflow starts no broker")
    return LocalKafka(settings.local_kafka_home.resolve(), port=settings.kafka_port)


@kafka.command("start")
@click.pass_obj
def kafka_start(settings: Settings) -> None:
    """Fetch (first time), format and start the broker; wait until it answers; create topics."""
    from cdrflow.bus import provision_topics

    broker = _local_broker(settings)
    broker.start()
    created = provision_topics(settings.bootstrap, settings.namespace)
    click.echo(f"broker running at {broker.bootstrap}; {len(created)} topic(s) created")


@kafka.command("stop")
@click.pass_obj
def kafka_stop(settings: Settings) -> None:
    stopped = _local_broker(settings).stop()
    click.echo("broker stopped" if stopped else "broker was not running")


@kafka.command("status")
@click.pass_obj
def kafka_status(settings: Settings) -> None:
    status = _local_broker(settings).status()
    click.echo(f"{'running' if status.running else 'stopped'} {status.bootstrap} {status.detail}")
    sys.exit(0 if status.running else 3)


@main.command()
@click.pass_obj
def topics(settings: Settings) -> None:
    """Create any declared topic that is missing (idempotent)."""
    from cdrflow.bus import provision_topics

    created = provision_topics(settings.bootstrap, settings.namespace)
    click.echo(f"{len(created)} topic(s) created" + (": " + ", ".join(created) if created else ""))


@main.command()
@click.pass_obj
def migrate(settings: Settings) -> None:
    """Bring the database schema up to date (Alembic)."""
    from cdrflow.db import migrate as run_migrations

    run_migrations(settings.effective_database_url)
    click.echo("database is at the newest schema")


# --- running ----------------------------------------------------------------------


@main.command()
@click.argument("service", type=click.Choice(LOOP_SERVICES + SERVED_SERVICES))
@click.pass_obj
def run(settings: Settings, service: str) -> None:
    """Run one service in this process until SIGTERM or Ctrl-C."""
    if service in NOT_YET:
        raise click.ClickException(f"the {service} is not built yet: it comes with the {NOT_YET[service]} issue")
    from importlib import import_module

    from cdrflow.log import configure_logging
    from cdrflow.runtime import Runtime

    configure_logging(settings.log_level, service)
    runtime = Runtime(settings, service)
    if service in SERVED_SERVICES:
        import_module(f"services.{service}.service").serve(runtime)
        return
    loop = import_module(f"services.{service}.service").build_loop(runtime)
    loop.install_signal_handlers()
    loop.run()


@main.command()
@click.option("--json-logs", is_flag=True, help="services' JSON logs on stderr, as in a container (the default "
                                                "when stdout is not a terminal); otherwise they go to "
                                                "<data_dir>/logs/<service>.log and the terminal gets a summary")
@click.pass_obj
def up(settings: Settings, json_logs: bool) -> None:
    """Start the broker (unless external), migrate, and run every service as its own process."""
    import time

    from cdrflow_app.orchestrate import infrastructure, pipeline, wait_for_listener
    from cdrflow_app.up_summary import exited_report, logs_dir, up_summary, wants_json_logs

    stop = False

    def request_stop(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    log_dir = None if wants_json_logs(json_logs, sys.stdout) else logs_dir(settings)
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    with infrastructure(settings) as infra, pipeline(settings, str(log_dir) if log_dir else None) as procs:
        if log_dir is None:
            click.echo(f"cdrflow up: {', '.join(procs)} running; admin API at {settings.admin_url}; Ctrl-C stops")
        else:
            listening = "mailgate" not in procs or wait_for_listener(settings.mailgate_host, settings.mailgate_port,
                                                                     procs["mailgate"])
            click.echo(up_summary(settings, procs, infra, log_dir, mailgate_listening=listening))
        while not stop:
            dead = [n for n, p in procs.items() if p.poll() is not None]
            if dead:
                raise click.ClickException(exited_report(procs, dead, log_dir))
            time.sleep(0.5)
    click.echo("cdrflow stopped")


@main.command()
@click.pass_obj
def demo(settings: Settings) -> None:
    """The main job: run the whole pipeline on embedded defaults over the sample carrier files."""
    from cdrflow_app.demo import run_demo

    run_demo(settings)


# --- operator commands (over the admin API) ----------------------------------------


@main.command()
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--carrier", required=True)
@click.option("--kind", type=click.Choice(["cdr", "sdr"]), default="cdr", show_default=True)
@click.option("--period", type=click.Choice(["daily", "monthly"]), default="daily", show_default=True)
@click.option("--direction", type=click.Choice(["outbound", "inbound"]), required=True)
@click.pass_context
def upload(ctx: click.Context, path: Path, carrier: str, kind: str, period: str, direction: str) -> None:
    """Upload a carrier file; prints its file id."""
    reply = _admin(ctx).upload(path, carrier=carrier, kind=kind, period=period, direction=direction)
    click.echo(f"{reply['file_id']} {reply['fingerprint']} {reply['size']} bytes"
               + ("" if reply.get("announced", True) else QUEUED_NOTE))


# --- reference data ------------------------------------------------------------------


@main.group()
def carriers() -> None:
    """Carriers whose files cdrflow accepts."""


@carriers.command("add")
@click.argument("code")
@click.option("--name", required=True)
@click.option("--format", "file_format", default=None,
              help="the format of its CDR files (see 'cdrflow formats'); default: the built-in format named "
                   "like the carrier (gamma, cucm, …), else generic-cdr; a carrier already added keeps its own")
@click.pass_obj
def carriers_add(settings: Settings, code: str, name: str, file_format: str | None) -> None:
    """Add a carrier (or change its name and CDR format)."""
    from services.parser.custom import save_carrier

    with open_database(settings).transaction() as session:
        saved = save_carrier(session, code, name, file_format)
    why = {"given": "", "named": " (the built-in format of that name)", "kept": " (as before)",
           "default": " (the default)"}[saved.chosen]
    click.echo(f"carrier {code} saved: its CDR files are read as {saved.file_format}{why}")
    if saved.setting is not None and saved.setting != saved.file_format:
        click.echo(f"  (its 'formats use' setting reads them as {saved.setting} instead)")
    click.echo(f"  change it with 'cdrflow formats use {code} --kind cdr --format F' ('cdrflow formats' lists "
               f"them; 'cdrflow formats detect FILE' suggests one); SDR files: --kind sdr")


@carriers.command("rules")
@click.argument("code")
@click.option("--hold-same-name/--no-hold-same-name", default=None,
              help="hold a file that reuses an earlier file name of this carrier, even with new content")
@click.option("--sdr", type=click.Choice(["billing", "information"]), default=None,
              help="this carrier's fixed-fee (SDR) files are billed, or kept for information only")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def carriers_rules(settings: Settings, code: str, hold_same_name: bool | None, sdr: str | None, as_json: bool) -> None:
    """Set a carrier's processing rules: duplicate files, and whether its SDR files are billed."""
    from services.dedupe.rules import set_hold_same_name
    from services.rater.fees import set_sdr_for_billing

    if hold_same_name is None and sdr is None:
        raise click.UsageError("give --hold-same-name/--no-hold-same-name and/or --sdr billing|information")
    with open_database(settings).transaction() as session:
        if hold_same_name is not None:
            carrier = set_hold_same_name(session, code, hold_same_name)
        if sdr is not None:
            carrier = set_sdr_for_billing(session, code, sdr == "billing")
        rules = {"carrier": code, "hold_same_name": carrier.hold_same_name,
                 "sdr": "billing" if carrier.sdr_for_billing else "information"}
    if as_json:
        import orjson

        click.echo(orjson.dumps(rules).decode())
        return
    click.echo(f"carrier {code}: same-name rule {'on' if rules['hold_same_name'] else 'off'}, "
               f"SDR files for {rules['sdr']}")


CARRIER_COLUMNS = ("carrier", "name", "cdr_format", "sdr_format", "sdr", "hold_same_name", "file_name_pattern")


add_list_command(carriers, "carriers", CARRIER_COLUMNS, "no carriers",
                 "Carriers: the formats that read their files and their processing rules.")
add_show_command(carriers, "carriers", "code",
                 "A carrier: formats, rules, the addresses to mail its files to, its collection sources.")


from cdrflow.cli_files import QUEUED_NOTE, files  # noqa: E402  (files: list, show, release, discard, retry)

main.add_command(files)

from services.collector.commands import collect, sources  # noqa: E402  (commands of the Collection issue)

main.add_command(sources)
main.add_command(collect)

from services.mailgate.commands import mail  # noqa: E402  (the mail gateway's commands)

main.add_command(mail)

from services.invoicer.commands import invoices  # noqa: E402  (list, show, pdf, csv, credit, send, deliveries)

main.add_command(invoices)

from services.scheduler.commands import bill, charges  # noqa: E402  (billing runs by hand, charges)

main.add_command(bill)
main.add_command(charges)

from services.invoicer.calls_commands import calls, unbilled_charges  # noqa: E402  (what is not billed yet)

main.add_command(calls)
charges.add_command(unbilled_charges)  # cdrflow charges unbilled --customer C

from services.rater.commands import fees  # noqa: E402  (fixed-fee sheets: load, list, show)

main.add_command(fees)

from services.rater.rating_commands import clis, customers, rate, rates, recon, schedules, tariffs  # noqa: E402

for command in (tariffs, schedules, rates, customers, clis, recon, rate):
    main.add_command(command)

from services.parser.commands import formats, parse  # noqa: E402  (commands of the Carrier formats issue)

main.add_command(parse)
main.add_command(formats)

from cdrflow.cli_dlq import dlq  # noqa: E402  (dead letters: list, show, replay)

main.add_command(dlq)

from services.admin.commands import audit, tokens, users  # noqa: E402  (who may use the console and API; the audit trail)

main.add_command(users)
main.add_command(tokens)
main.add_command(audit)
