"""``cdrflow sources …`` and ``cdrflow collect``: configure the collector's FTP/FTPS/SFTP sources and
see how they are doing. These act on the database directly, like ``cdrflow carriers``."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cdrflow.cli_common import add_show_command, admin_client, echo_listing, json_option, open_database
from cdrflow.settings import Settings

if TYPE_CHECKING:
    from services.collector.poll import PollResult
    from services.collector.sources import EarlierCollection


@click.group()
def sources() -> None:
    """Carriers' FTP, FTPS and SFTP servers the collector polls (see docs/collection.md)."""


@sources.command("keygen")
def sources_keygen() -> None:
    """Print a new key for CDRFLOW_SECRET_KEY (encrypts source passwords and keys at rest)."""
    from services.collector.credentials import new_secret_key

    click.echo(new_secret_key())


@sources.command("add")
@click.argument("name")
@click.option("--carrier", required=True)
@click.option("--protocol", type=click.Choice(["ftp", "ftps", "sftp"]), required=True,
              help="ftps is explicit TLS (AUTH TLS) on the FTP port")
@click.option("--host", required=True)
@click.option("--port", type=int, default=None, help="default 21 (ftp, ftps) or 22 (sftp)")
@click.option("--username", required=True)
@click.option("--password", default=None, help="visible in shell history: prefer --ask-password")
@click.option("--ask-password", is_flag=True, help="prompt for the password")
@click.option("--key-file", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="SFTP private key (OpenSSH or PEM)")
@click.option("--ask-passphrase", is_flag=True, help="prompt for the private key's passphrase")
@click.option("--dir", "remote_dir", default=".", show_default=True, help="remote directory")
@click.option("--rule", "rules", multiple=True,
              help="PATTERN=KIND,PERIOD,DIRECTION, e.g. 'monthly/*.csv=cdr,monthly,outbound' (repeatable; "
                   "first match wins). Default: '*=cdr,daily,outbound'")
@click.option("--interval", "poll_interval", type=int, default=300, show_default=True, help="seconds between polls")
@click.option("--delete/--keep", "delete_after_collect", default=False, show_default=True,
              help="delete remote files after collecting them")
@click.option("--verify-tls/--no-verify-tls", default=True, show_default=True,
              help="FTPS: verify the server certificate (turn off only for a self-signed carrier server)")
@click.option("--ca-file", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="FTPS: PEM certificate of the carrier's CA (or its self-signed certificate) to verify against "
                   "instead of the system's CAs")
@click.pass_obj
def sources_add(settings: Settings, name: str, carrier: str, protocol: str, host: str, port: int | None,
                username: str, password: str | None, ask_password: bool, key_file: Path | None,
                ask_passphrase: bool, remote_dir: str, rules: tuple[str, ...], poll_interval: int,
                delete_after_collect: bool, verify_tls: bool, ca_file: Path | None) -> None:
    """Add (or change) a source. Credentials are stored encrypted with CDRFLOW_SECRET_KEY."""
    from services.collector.credentials import Credentials
    from services.collector.rules import parse_rule
    from services.collector.sources import SourceSpec, save_source, unreadable_sources

    if ask_password:
        password = click.prompt("password", hide_input=True)
    passphrase = click.prompt("key passphrase", hide_input=True) if ask_passphrase else None
    private_key = _read_key_file(key_file) if key_file else None
    spec = SourceSpec(name=name, carrier=carrier, protocol=protocol, host=host, port=port, username=username,
                      credentials=Credentials(password, private_key, passphrase),
                      rules=[parse_rule(r) for r in rules or ("*=cdr,daily,outbound",)],
                      remote_dir=remote_dir, poll_interval=poll_interval,
                      delete_after_collect=delete_after_collect, verify_tls=verify_tls,
                      tls_ca=ca_file.read_text() if ca_file else None)
    database = open_database(settings)
    with database.transaction() as session:
        src = save_source(session, spec, settings.secret_key)
        pinned = src.host_key is not None
        others = [n for n in unreadable_sources(session, settings.secret_key) if n != name]
    click.echo(f"source {name} saved ({protocol}://{host}, {len(spec.rules)} rule(s))")
    if others:
        click.echo(f"WARNING: source(s) {', '.join(others)} were saved with another CDRFLOW_SECRET_KEY: this key "
                   "can't decrypt them, so the collector can't poll them with it; run the collector with one key: "
                   "the one they were saved with (and add this source again under it), or add them again under "
                   "this one", err=True)
    if protocol == "sftp" and not pinned:
        click.echo(f"next: 'cdrflow sources trust {name}' to pin the server's host key")


def _read_key_file(path: Path) -> str:
    try:
        return path.read_text()
    except UnicodeDecodeError as exc:
        raise click.ClickException(f"{path} is not a text file: give the SFTP private key in OpenSSH "
                                   "('-----BEGIN OPENSSH PRIVATE KEY-----') or PEM format") from exc


@sources.command("list")
@click.option("--carrier", default=None, help="only this carrier's sources")
@json_option
@click.pass_context
def sources_list(ctx: click.Context, carrier: str | None, as_json: bool) -> None:
    """Each source: where it is and what it collects (never its credentials), with its warnings
    (host key NOT pinned, TLS NOT verified)."""
    rows = admin_client(ctx).listing("sources", carrier=carrier)
    for row in rows:
        row["rules"] = [f"{r['pattern']}={r['kind']},{r['period']},{r['direction']}" for r in row["rules"]]
    echo_listing(rows, ("source", "carrier", "protocol", "username", "host", "port", "remote_dir", "poll_interval",
                        "delete_after_collect", "state", "rules", "warnings"), as_json, "no sources")


add_show_command(sources, "sources", "name",
                 "A source: where it is, what it collects, and how its polls are going (never its credentials).")


@sources.command("trust")
@click.argument("name")
@click.option("--fingerprint", default=None, help="pin the server's key with this fingerprint (SHA256:…, as "
                                                  "`ssh` or the carrier shows it), without asking")
@click.option("--yes", is_flag=True, help="pin every key the server presents, without asking")
@click.pass_obj
def sources_trust(settings: Settings, name: str, fingerprint: str | None, yes: bool) -> None:
    """Show every host key an SFTP server presents, with its fingerprint, and pin them (confirm a
    fingerprint with the carrier first). Any pinned key identifies the server."""
    from services.collector.remote import describe_keys, fetch_host_keys, pinned_keys
    from services.collector.sources import get_source, pin_host_key

    database = open_database(settings)
    with database.transaction() as session:
        src = get_source(session, name)
        if src.protocol != "sftp":
            raise click.ClickException(f"source {name} is {src.protocol}: host keys are pinned for SFTP only")
        host, port, pinned = src.host, src.port, src.host_key
    keys = asyncio.run(fetch_host_keys(name, host, port, settings.collector_timeout))
    for key in keys:
        click.echo(f"{host}:{port} presents {key.get_algorithm()} key {key.get_fingerprint('sha256')}")
    seen = {key.get_fingerprint("sha256"): key for key in keys}
    if pinned:
        before = {key.get_fingerprint("sha256") for key in pinned_keys(pinned)}
        click.echo("these are the pinned keys already" if before == set(seen) else
                   f"WARNING: pinned now: {', '.join(sorted(before))}; pinning replaces them "
                   "(confirm the change with the carrier)")
    if fingerprint is not None:
        wanted = fingerprint if fingerprint.startswith("SHA256:") else f"SHA256:{fingerprint}"
        if wanted not in seen:
            raise click.ClickException(f"the server presents {describe_keys(keys)}; none is {wanted}: not pinned")
        keys = [seen[wanted]]
    elif not yes and not click.confirm(f"pin {'these keys' if len(keys) > 1 else 'this key'}?"):
        raise click.ClickException("not pinned")
    with database.transaction() as session:
        pin_host_key(session, name, "\n".join(key.export_public_key().decode().strip() for key in keys))
    click.echo(f"host key{'s' if len(keys) > 1 else ''} pinned for source {name}: {describe_keys(keys)}")


@sources.command("disable")
@click.argument("name")
@click.pass_obj
def sources_disable(settings: Settings, name: str) -> None:
    """Stop polling a source (its settings and what it collected are kept)."""
    from services.collector.sources import set_enabled

    with open_database(settings).transaction() as session:
        set_enabled(session, name, False)
    click.echo(f"source {name} disabled")


@sources.command("enable")
@click.argument("name")
@click.pass_obj
def sources_enable(settings: Settings, name: str) -> None:
    """Poll a disabled source again (at once)."""
    from services.collector.sources import set_enabled

    with open_database(settings).transaction() as session:
        set_enabled(session, name, True)
    click.echo(f"source {name} enabled")


@sources.command("remove")
@click.argument("name")
@click.option("--yes", is_flag=True, help="don't ask")
@click.pass_obj
def sources_remove(settings: Settings, name: str, yes: bool) -> None:
    """Forget a source and its record of collected files. Files already collected stay in the pipeline;
    if the source is added again, every file still on its server is collected again."""
    from services.collector.sources import remove_source

    if not yes:
        click.confirm(f"forget source {name} and its record of collected files?", abort=True)
    with open_database(settings).transaction() as session:
        forgotten = remove_source(session, name)
    click.echo(f"source {name} removed ({forgotten} collected-file record(s) forgotten)")


@sources.command("status")
@json_option
@click.pass_obj
def sources_status(settings: Settings, as_json: bool) -> None:
    """Each source's state: files collected, consecutive failures, last success, next poll, last
    error (times in the operator's zone)."""
    from services.collector.sources import all_sources

    def when(value) -> str | None:  # type: ignore[no-untyped-def]
        return value.astimezone(settings.zone).isoformat(timespec="seconds") if value else None

    with open_database(settings).transaction() as session:
        rows = [{"source": src.name, "state": src.state if src.enabled else "disabled", "collected": src.collected,
                 "failures": src.failures, "last_success": when(src.last_success_at),
                 "next_poll": when(src.next_poll_at), "last_error": src.last_error}
                for src in all_sources(session)]
    echo_listing(rows, tuple(rows[0]) if rows else (), as_json, "no sources")


@click.command()
@click.argument("name")
@click.option("--now", is_flag=True, help="poll here and now and print what was fetched (otherwise: ask the "
                                          "running collector to poll within a second)")
@click.pass_obj
def collect(settings: Settings, name: str, now: bool) -> None:
    """Poll one source at once."""
    from services.collector.sources import collected_before, get_source, request_poll

    if not now:
        with open_database(settings).transaction() as session:
            request_poll(session, name)
        click.echo(f"poll of {name} requested from the running collector")
        return
    from cdrflow.runtime import Runtime
    from services.collector.poll import Collector

    runtime = Runtime(settings, "collector")
    result = asyncio.run(Collector(runtime).poll(name))
    for f in result.fetched:
        click.echo(f"{f['file_id']}  {f['kind']} {f['period']} {f['direction']}  {f['remote_path']}"
                   f"  {f['size']} bytes")
    for path in result.waiting:
        click.echo(f"waiting (still being written): {path}")
    for path in result.unchanged:
        click.echo(f"unchanged (touched, same bytes as collected before): {path}")
    with runtime.database.transaction() as session:
        src = get_source(session, name)
        earlier = collected_before(session, name, result.already_collected)
        carrier, interval = src.carrier, src.poll_interval
    click.echo(collect_summary(name, carrier, interval, result, earlier, settings.zone))
    if result.error:
        raise click.ClickException(result.error)


def collect_summary(name: str, carrier: str, poll_interval: int, result: PollResult, earlier: EarlierCollection,
                    zone: tzinfo, now: datetime | None = None) -> str:
    """The last line of ``collect --now``: what this poll fetched and, when it fetched nothing,
    why (the files were collected before, by the collector service or an earlier poll, or no
    file on the server matches the source's rules), from what the database remembers."""
    fetched = len(result.fetched)
    if earlier.files:
        when = "-"
        if earlier.last_at is not None:
            local, today = earlier.last_at.astimezone(zone), (now or datetime.now(UTC)).astimezone(zone).date()
            when = f"{local:%H:%M}" if local.date() == today else f"{local:%Y-%m-%d %H:%M}"
        return (f"{name}: {fetched} new file(s); {earlier.files} file(s) on the server were already collected "
                f"from this source, the last at {when} (the collector service polls it every {poll_interval}s; "
                f"a poll fetches only new or changed files): see 'cdrflow files --carrier {carrier}' and "
                "'cdrflow sources status'")
    if result.listed == 0 and result.error is None:
        return (f"{name}: 0 file(s) collected: no file on the server matches the source's rules (see "
                "'cdrflow sources list' for its directory and rules)")
    return f"{name}: {fetched} file(s) collected"
