"""``cdrflow users|tokens|audit``: who may use the console and the API, and what they did.

These act on the database directly (like ``cdrflow migrate``, which they run first), not through
the admin API: the first admin is made before anything runs, and a locked-out operator can be
let back in from the machine itself. Their own changes are audited as ``local-admin``, the
built-in admin of this machine, with the system user who ran the command."""

from __future__ import annotations

import getpass
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from cdrflow.cli_common import echo_listing
from cdrflow.settings import Settings

if TYPE_CHECKING:
    from cdrflow.db import Database

ROLE_CHOICE = click.Choice(["viewer", "operator", "admin"])


def _database(settings: Settings) -> Database:
    from cdrflow.db import Database, migrate

    migrate(settings.effective_database_url)
    return Database(settings.effective_database_url)


def _audit(session: Any, action: str, target: str, detail: dict[str, Any] | None = None) -> None:
    from services.admin.accounts import LOCAL_ADMIN, write_audit

    write_audit(session, LOCAL_ADMIN, action, target, None, {"system_user": getpass.getuser()} | (detail or {}))


def _local(moment: datetime | None, settings: Settings) -> str | None:
    return moment.astimezone(settings.zone).isoformat(timespec="seconds") if moment else None


def _password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    return click.prompt("Password", hide_input=True, confirmation_prompt="Password again")


# --- users ----------------------------------------------------------------------------------


@click.group()
def users() -> None:
    """Users of the console and the API: viewer (reads), operator (also acts), admin (also manages users)."""


@users.command("add")
@click.argument("name")
@click.option("--role", type=ROLE_CHOICE, required=True, help="viewer, operator or admin")
@click.option("--password-stdin", is_flag=True, help="read the password from the first line of stdin (scripts)")
@click.pass_obj
def users_add(settings: Settings, name: str, role: str, password_stdin: bool) -> None:
    """Add user NAME with a password (asked twice, hidden; argon2-hashed, never stored as typed)."""
    from services.admin.accounts import add_user

    password = _password(password_stdin)
    with _database(settings).transaction() as session:
        add_user(session, name, role, password)
        _audit(session, "user.add", name, {"role": role})
    click.echo(f"user {name} added as {role}: they can log in at {settings.admin_url}/login")


@users.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON (for scripts)")
@click.pass_obj
def users_list(settings: Settings, as_json: bool) -> None:
    """Every user: role, whether they have a password, when made or disabled."""
    from services.admin.accounts import list_users

    with _database(settings).transaction() as session:
        rows = [{"name": u.name, "role": u.role, "password": u.password_hash is not None,
                 "status": "disabled" if u.disabled_at else "active", "created_at": _local(u.created_at, settings),
                 "disabled_at": _local(u.disabled_at, settings)} for u in list_users(session)]
    echo_listing(rows, ("name", "role", "status", "password", "created_at", "disabled_at"), as_json,
                 "no users yet: add one with 'cdrflow users add NAME --role admin'")


@users.command("disable")
@click.argument("name")
@click.pass_obj
def users_disable(settings: Settings, name: str) -> None:
    """Disable user NAME: no more logins; their open sessions and API tokens are refused at once."""
    from services.admin.accounts import disable_user

    with _database(settings).transaction() as session:
        changed = disable_user(session, name)
        if changed:
            _audit(session, "user.disable", name)
    click.echo(f"user {name} disabled" if changed else f"user {name} was disabled already")


@users.command("password")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="read the password from the first line of stdin (scripts)")
@click.pass_obj
def users_password(settings: Settings, name: str, password_stdin: bool) -> None:
    """Set a new password for user NAME (asked twice, hidden)."""
    from services.admin.accounts import set_password

    password = _password(password_stdin)
    with _database(settings).transaction() as session:
        set_password(session, name, password)
        _audit(session, "user.password", name)
    click.echo(f"password of {name} changed")


@users.command("role")
@click.argument("name")
@click.argument("role", type=ROLE_CHOICE)
@click.pass_obj
def users_role(settings: Settings, name: str, role: str) -> None:
    """Give user NAME another role (viewer, operator or admin)."""
    from services.admin.accounts import set_role

    with _database(settings).transaction() as session:
        set_role(session, name, role)
        _audit(session, "user.role", name, {"role": role})
    click.echo(f"user {name} is now {role}")


# --- API tokens -----------------------------------------------------------------------------


@click.group()
def tokens() -> None:
    """API tokens for automation: sent as 'Authorization: Bearer TOKEN'; only their hash is kept."""


@tokens.command("add")
@click.option("--user", "user", required=True, help="whose token: it acts with that user's role")
@click.option("--name", "label", required=True, help="what it is for, e.g. 'finance export'")
@click.pass_obj
def tokens_add(settings: Settings, user: str, label: str) -> None:
    """Make an API token and print it, once: it can't be shown again (only its SHA-256 is kept)."""
    from services.admin.accounts import add_token

    with _database(settings).transaction() as session:
        row, token = add_token(session, user, label)
        _audit(session, "token.add", f"token {row.id}", {"user": user, "name": row.name})
    click.echo(f"token {row.id} for {user} ({row.name}); it is shown only this once:", err=True)
    click.echo(token)


@tokens.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON (for scripts)")
@click.pass_obj
def tokens_list(settings: Settings, as_json: bool) -> None:
    """Every API token (never the token itself): whose, what for, when last used, revoked or not."""
    from services.admin.accounts import list_tokens

    with _database(settings).transaction() as session:
        rows = [{"id": t.id, "user": t.user, "name": t.name, "status": "revoked" if t.revoked_at else "active",
                 "created_at": _local(t.created_at, settings), "last_used_at": _local(t.last_used_at, settings),
                 "revoked_at": _local(t.revoked_at, settings)} for t in list_tokens(session)]
    echo_listing(rows, ("id", "user", "status", "created_at", "last_used_at", "name"), as_json,
                 "no API tokens yet: make one with 'cdrflow tokens add --user NAME --name LABEL'")


@tokens.command("revoke")
@click.argument("token_id", type=int)
@click.pass_obj
def tokens_revoke(settings: Settings, token_id: int) -> None:
    """Revoke API token ID (see 'cdrflow tokens list'): refused from the next request on."""
    from services.admin.accounts import revoke_token

    with _database(settings).transaction() as session:
        row = revoke_token(session, token_id)
        _audit(session, "token.revoke", f"token {token_id}", {"user": row.user, "name": row.name})
    click.echo(f"token {token_id} of {row.user} ({row.name}) revoked")


# --- audit ----------------------------------------------------------------------------------


@click.group()
def audit() -> None:
    """The audit trail: every state change, who made it, when and why."""


@audit.command("list")
@click.option("--since", help="a day YYYY-MM-DD (local) or an ISO time; default: everything")
@click.option("--limit", type=click.IntRange(1), default=1000, show_default=True, help="at most this many, newest first")
@click.option("--json", "as_json", is_flag=True, help="print JSON (for scripts)")
@click.pass_obj
def audit_list(settings: Settings, since: str | None, limit: int, as_json: bool) -> None:
    """What was changed, newest first: when, who, action, target, reason."""
    from services.admin.accounts import audit_json, audit_since
    from services.admin.audit_api import parse_since

    try:
        start = parse_since(since, settings.zone) if since else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    with _database(settings).transaction() as session:
        rows = [audit_json(r) | {"at": _local(r.at, settings)} for r in audit_since(session, start, limit)]
    echo_listing(rows, ("at", "user", "action", "target", "reason"), as_json,
                 "nothing audited" + (f" since {since}" if since else " yet"))
