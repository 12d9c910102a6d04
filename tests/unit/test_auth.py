"""Who may use the admin app (services.admin.auth, services.admin.accounts): roles, API tokens,
sessions, CSRF, the audit trail and the ``cdrflow users|tokens|audit`` commands (SQLite)."""

import hashlib
import time

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

import services.admin.app
from cdrflow_app.cli import main
from cdrflow.db.models import ApiToken, AuditEntry, OutboxEntry, User
from cdrflow.events import Event
from services.admin import accounts, auth
from services.admin.app import create_app
from tests.authhelp import admin_token, as_user, bearer, logged_in, user_token
from tests.unit.test_dedupe_service import arrive
from tests.unit.test_dlq_api import RecordingProducer
from tests.unit.test_handlers import runtime  # noqa: F401  (fixture)

PASSWORD = "correct horse battery"


@pytest.fixture
def app(runtime, monkeypatch):
    runtime.__dict__["producer"] = RecordingProducer()
    monkeypatch.setattr(services.admin.app, "ANNOUNCE_WAIT_S", 0)  # no relay runs here: don't wait for it
    return create_app(runtime)


@pytest.fixture
def client(app):
    with TestClient(app) as c:  # not authenticated: each test says who it is
        yield c


def audit_rows(runtime, action=None):
    with runtime.database.transaction() as session:
        rows = session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    return [r for r in rows if action is None or r.action == action]


# --- nobody ------------------------------------------------------------------------------------


def test_the_api_answers_401_json_without_a_user(client):
    for method, path in (("GET", "/files"), ("POST", "/billing-runs"), ("GET", "/audit"), ("GET", "/customers")):
        reply = client.request(method, path)
        assert reply.status_code == 401, path
        assert "log in first" in reply.json()["error"]
        assert reply.headers["www-authenticate"] == "Bearer"


def test_console_pages_send_nobody_to_the_login_page_with_where_they_were_going(client):
    reply = client.get("/console/files?status=held", follow_redirects=False)
    assert reply.status_code == 303
    assert reply.headers["location"] == "/login?next=%2Fconsole%2Ffiles%3Fstatus%3Dheld"
    assert client.get("/", follow_redirects=False).headers["location"] == "/login?next=%2F"


def test_public_paths_need_nobody(client):
    assert client.get("/health").json() == {"status": "ok"}


def test_an_unknown_or_malformed_bearer_token_is_refused_even_with_a_good_session(client, runtime):
    user_token(runtime, "sam", "operator")
    logged_in(client, runtime, "sam")
    assert client.get("/files").status_code == 200
    reply = client.get("/files", headers=bearer("cdrflow_not-a-token"))
    assert reply.status_code == 401 and "unknown, revoked" in reply.json()["error"]


# --- roles -------------------------------------------------------------------------------------


VIEWER_REFUSED = [
    ("POST", "/files/{held}/release", {"reason": "checked"}),
    ("POST", "/files/{held}/discard", {"reason": "copy"}),
    ("POST", "/files/{held}/retry", {}),
    ("POST", "/files/{held}/reverse", {"reason": "billed twice"}),
    ("POST", "/billing-runs", {"customer": "ACME"}),
    ("POST", "/invoices/INV-000001/credit", {"reason": "wrong rates"}),
]


@pytest.mark.parametrize(("method", "path", "body"), VIEWER_REFUSED,
                         ids=["release", "discard", "retry", "reverse", "bill", "credit"])
def test_a_viewer_may_read_but_not_release_discard_retry_reverse_bill_or_credit(client, runtime, method, path, body):
    arrive(runtime)
    held = arrive(runtime)
    as_user(client, runtime, "vera", "viewer")
    assert client.get("/files").status_code == 200
    reply = client.request(method, path.format(held=held.subject), json=body)
    assert reply.status_code == 403
    assert reply.json()["error"].startswith("vera is a viewer: only an operator or admin can change anything")
    assert runtime.producer.sent == [] and audit_rows(runtime, f"file.{path.rsplit('/', 1)[-1]}") == []


def test_an_operator_releases_a_held_file_recorded_as_themselves_whatever_header_they_send(client, runtime):
    arrive(runtime)
    held = arrive(runtime)
    as_user(client, runtime, "kim", "operator")
    reply = client.post(f"/files/{held.subject}/release", json={"reason": "carrier re-issued it"},
                        headers={"x-operator": "the boss"})
    assert reply.status_code == 202
    with runtime.database.transaction() as session:
        command = Event.from_bytes(session.scalars(select(OutboxEntry.payload).order_by(OutboxEntry.id.desc())).first())
    assert (command.data["command"], command.data["operator"]) == ("release", "kim")
    [row] = audit_rows(runtime, "file.release")
    assert (row.user, row.target, row.reason) == ("kim", held.subject, "carrier re-issued it")
    assert row.detail is None  # only local-admin (the CLI) may name the person it acts for


def test_the_cli_as_local_admin_names_its_operator_and_the_audit_row_keeps_both(client, runtime):
    arrive(runtime)
    held = arrive(runtime)
    client.headers.update(bearer(admin_token(runtime)))
    assert client.post(f"/files/{held.subject}/discard", json={"reason": "a copy"},
                       headers={"x-operator": "sam"}).status_code == 202
    [row] = audit_rows(runtime, "file.discard")
    assert (row.user, row.reason, row.detail) == ("local-admin", "a copy", {"operator": "sam"})


def test_require_role_says_who_may_and_user_can_orders_roles():
    viewer, operator = accounts.User("vera", "viewer"), accounts.User("kim", "operator")
    assert operator.can("viewer") and operator.can("operator") and not operator.can("admin")
    assert not viewer.can("operator")
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": [], "state": {"user": viewer}})
    with pytest.raises(auth.HTTPException) as refused:
        auth.require_role(request, "operator", "close a billing run")
    assert (refused.value.status_code, refused.value.detail) == (
        403, "vera is a viewer: only an operator or admin can close a billing run")
    request.state.user = operator
    with pytest.raises(auth.HTTPException) as admin_only:
        auth.require_role(request, "admin", "add users")
    assert admin_only.value.detail == "kim is an operator: only an admin can add users"
    request.state.user = None
    with pytest.raises(auth.HTTPException) as nobody:
        auth.require_role(request, "viewer")
    assert nobody.value.status_code == 401


def test_the_audit_trail_is_for_operators_and_admins(client, runtime):
    as_user(client, runtime, "vera", "viewer")
    refused = client.get("/audit")
    assert refused.status_code == 403 and "only an operator or admin can read the audit trail" in refused.json()["error"]
    as_user(client, runtime, "kim", "operator")
    rows = client.get("/audit", params={"since": "2000-01-01"}).json()
    assert rows[-1]["action"] == "token.add" and rows[-1]["user"] == "local-admin"
    assert client.get("/audit", params={"since": "last week"}).status_code == 400


# --- API tokens --------------------------------------------------------------------------------


def test_a_token_is_kept_only_as_its_sha256_and_stops_working_when_revoked(client, runtime):
    token = user_token(runtime, "ci", "operator")
    with runtime.database.transaction() as session:
        [row] = session.scalars(select(ApiToken).where(ApiToken.user == "ci")).all()
        stored = [str(getattr(row, c.key)) for c in ApiToken.__table__.columns]
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert not any(token in value for value in stored)
    assert client.get("/files", headers=bearer(token)).status_code == 200
    with runtime.database.transaction() as session:
        assert session.get(ApiToken, row.id).last_used_at is not None
        accounts.revoke_token(session, row.id)
    reply = client.get("/files", headers=bearer(token))
    assert reply.status_code == 401 and "revoked" in reply.json()["error"]


def test_admin_token_file_is_private_kept_while_it_works_and_replaced_once_revoked(runtime, app):
    path = runtime.settings.data_dir / "admin.token"
    first = path.read_text().strip()
    assert path.stat().st_mode & 0o777 == 0o600
    create_app(runtime)
    assert path.read_text().strip() == first
    with runtime.database.transaction() as session:
        row = session.scalars(select(ApiToken).where(ApiToken.token_hash == accounts.token_hash(first))).one()
        accounts.revoke_token(session, row.id)
    create_app(runtime)
    second = path.read_text().strip()
    assert second != first and path.stat().st_mode & 0o777 == 0o600
    with TestClient(app) as c:
        assert c.get("/files", headers=bearer(second)).status_code == 200


# --- users and passwords -----------------------------------------------------------------------


def test_passwords_are_argon2_hashes_and_only_the_right_one_logs_in(runtime):
    with runtime.database.transaction() as session:
        accounts.add_user(session, "sam", "operator", PASSWORD)
    with runtime.database.transaction() as session:
        stored = session.get(User, "sam").password_hash
        assert stored.startswith("$argon2id$") and PASSWORD not in stored
        assert auth.authenticate(session, "sam", PASSWORD) == auth.User("sam", "operator")
        assert auth.authenticate(session, "sam", PASSWORD + "!") is None
        assert auth.authenticate(session, "nobody", PASSWORD) is None
        assert auth.authenticate(session, "local-admin", "") is None  # no password: tokens only
        with pytest.raises(accounts.AccountError, match="too short"):
            accounts.add_user(session, "bob", "viewer", "short")
        with pytest.raises(accounts.AccountError, match="unknown role 'root'"):
            accounts.add_user(session, "bob", "root", PASSWORD)


def test_a_disabled_user_cant_log_in_and_their_token_and_session_are_refused(client, runtime):
    token = user_token(runtime, "sam", "operator", PASSWORD)
    logged_in(client, runtime, "sam")
    assert client.get("/files").status_code == 200
    with runtime.database.transaction() as session:
        assert accounts.disable_user(session, "sam") is True
    assert client.get("/files").status_code == 401
    assert client.get("/files", headers=bearer(token)).status_code == 401
    with runtime.database.transaction() as session:
        assert auth.authenticate(session, "sam", PASSWORD) is None
        with pytest.raises(accounts.AccountError, match="disabled"):
            accounts.add_token(session, "sam", "another")


# --- sessions and CSRF -------------------------------------------------------------------------


def test_a_session_change_needs_the_csrf_header_a_token_does_not(client, runtime):
    token = user_token(runtime, "kim", "operator")
    csrf = logged_in(client, runtime, "kim")
    missing = client.put("/tariffs/T1", json={"name": "Tariff one"})
    assert missing.status_code == 403 and "CSRF token missing or wrong" in missing.json()["error"]
    wrong = client.put("/tariffs/T1", json={"name": "Tariff one"}, headers={"x-csrf-token": csrf + "x"})
    assert wrong.status_code == 403
    assert audit_rows(runtime, "tariff.save") == []
    right = client.put("/tariffs/T1", json={"name": "Tariff one"}, headers={"x-csrf-token": csrf})
    assert right.status_code == 200
    client.cookies.clear()
    assert client.put("/tariffs/T2", json={"name": "Two"}, headers=bearer(token)).status_code == 200
    assert [r.target for r in audit_rows(runtime, "tariff.save")] == ["T1", "T2"]


def test_a_session_idle_for_more_than_8_hours_is_over(client, runtime):
    user_token(runtime, "kim", "operator")
    logged_in(client, runtime, "kim", seen=int(time.time()) - auth.SESSION_IDLE - 60)
    assert client.get("/files").status_code == 401
    logged_in(client, runtime, "kim", seen=int(time.time()) - auth.SESSION_IDLE + 60)
    assert client.get("/files").status_code == 200


def login_app(runtime):
    """A small app with the real middleware and a login form of the console's shape."""

    async def login(request: Request) -> Response:
        form = await request.form()
        auth.verify_csrf(request, form.get("csrf_token"))
        with runtime.database.transaction() as session:
            user = auth.authenticate(session, str(form["name"]), str(form["password"]))
        if user is None:
            return JSONResponse({"error": "wrong name or password"}, status_code=401)
        auth.log_in(request, user)
        return JSONResponse({"user": user.name, "csrf": auth.csrf_token(request)})

    async def form_token(request: Request) -> Response:
        return JSONResponse({"csrf": auth.csrf_token(request)})

    async def change(request: Request) -> Response:
        form = await request.form()
        auth.verify_csrf(request, form.get("csrf_token"))
        user = auth.require_role(request, "operator", "change this")
        with runtime.database.transaction() as session:
            auth.audit(session, user, "thing.change", "thing 1", str(form.get("reason")))
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/login", form_token, methods=["GET"]), Route("/login", login, methods=["POST"]),
                             Route("/console/change", change, methods=["POST"])],
                     middleware=auth.auth_middleware(runtime.settings, runtime.database),
                     exception_handlers={auth.HTTPException: lambda r, e: JSONResponse({"error": e.detail},
                                                                                       status_code=e.status_code)})


def test_log_in_sets_an_httponly_samesite_strict_cookie_and_forms_need_the_csrf_token(runtime):
    user_token(runtime, "kim", "operator", PASSWORD)
    with TestClient(login_app(runtime)) as c:
        csrf = c.get("/login").json()["csrf"]
        assert c.post("/login", data={"name": "kim", "password": PASSWORD}).status_code == 403  # no CSRF token
        assert c.post("/login", data={"name": "kim", "password": "wrong", "csrf_token": csrf}).status_code == 401
        reply = c.post("/login", data={"name": "kim", "password": PASSWORD, "csrf_token": csrf})
        assert reply.status_code == 200
        cookie = reply.headers["set-cookie"].lower()
        assert cookie.startswith("cdrflow_session=") and "httponly" in cookie and "samesite=strict" in cookie
        session_csrf = reply.json()["csrf"]
        assert session_csrf != csrf  # a fresh session at log-in
        without = c.post("/console/change", data={"reason": "x"})
        assert without.status_code == 403 and "CSRF token missing" in without.json()["error"]
        stale = c.post("/console/change", data={"reason": "x", "csrf_token": csrf})
        assert stale.status_code == 403 and "CSRF token wrong" in stale.json()["error"]
        assert c.post("/console/change", data={"reason": "tidy", "csrf_token": session_csrf}).json() == {"ok": True}
    [row] = audit_rows(runtime, "thing.change")
    assert (row.user, row.target, row.reason) == ("kim", "thing 1", "tidy") and row.at.tzinfo is not None


# --- audit of API changes ----------------------------------------------------------------------


def test_api_changes_write_who_what_and_why_in_the_audit_trail(client, runtime):
    as_user(client, runtime, "kim", "operator")
    assert client.put("/customers/NEWCO", json={"name": "New Co", "tariff": "business"}).status_code == 200
    upload = client.post("/files", params={"carrier": "gamma", "kind": "cdr", "direction": "outbound",
                                           "name": "up.csv"}, content=b"cli,dialled\n")
    assert upload.status_code == 202
    rows = {r.action: r for r in audit_rows(runtime) if r.user == "kim"}
    assert rows["customer.save"].target == "NEWCO" and rows["customer.save"].detail == {"name": "New Co"}
    assert rows["file.upload"].target == upload.json()["file_id"]
    assert rows["file.upload"].detail["carrier"] == "gamma" and rows["file.upload"].detail["name"] == "up.csv"


# --- the commands ------------------------------------------------------------------------------


@pytest.fixture
def cli(runtime, monkeypatch):
    monkeypatch.setenv("CDRFLOW_DATA_DIR", str(runtime.settings.data_dir))
    monkeypatch.setenv("COLUMNS", "160")
    return lambda *args, **kw: CliRunner().invoke(main, list(args), **kw)


def test_users_add_list_disable_and_password_from_the_command_line(cli, runtime):
    added = cli("users", "add", "sam", "--role", "operator", "--password-stdin", input=PASSWORD + "\n")
    assert added.exit_code == 0, added.output
    asked = cli("users", "add", "ann", "--role", "admin", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert asked.exit_code == 0 and PASSWORD not in asked.output, asked.output
    listed = cli("users", "list")
    assert listed.output.splitlines()[0].split() == ["name", "role", "status", "password", "created_at", "disabled_at"]
    assert any(line.split()[:3] == ["sam", "operator", "active"] for line in listed.output.splitlines())
    assert cli("users", "add", "sam", "--role", "viewer", "--password-stdin", input=PASSWORD).output == (
        "cdrflow: error: a user named 'sam' exists already\n")
    assert cli("users", "password", "sam", "--password-stdin", input="a new long password\n").exit_code == 0
    assert cli("users", "disable", "sam").output == "user sam disabled\n"
    users = {u["name"]: u for u in __import__("json").loads(cli("users", "list", "--json").output)}
    assert users["sam"]["status"] == "disabled" and users["ann"]["role"] == "admin"
    with runtime.database.transaction() as session:
        assert auth.authenticate(session, "ann", PASSWORD) == auth.User("ann", "admin")
    actions = [(r.action, r.target) for r in audit_rows(runtime) if r.action.startswith("user.")]
    assert actions == [("user.add", "sam"), ("user.add", "ann"), ("user.password", "sam"), ("user.disable", "sam")]


def test_tokens_add_prints_the_token_once_and_list_and_revoke_never_show_it(cli, runtime, app):
    assert cli("users", "add", "ci", "--role", "viewer", "--password-stdin", input=PASSWORD).exit_code == 0
    made = CliRunner().invoke(main, ["tokens", "add", "--user", "ci", "--name", "nightly export"])
    token = made.stdout.strip()
    assert made.exit_code == 0 and token.startswith("cdrflow_") and "shown only this once" in made.stderr
    listed = cli("tokens", "list")
    assert token not in listed.output and "nightly export" in listed.output
    token_id = [t for t in __import__("json").loads(cli("tokens", "list", "--json").output) if t["user"] == "ci"][0]["id"]
    with TestClient(app) as c:
        assert c.get("/files", headers=bearer(token)).status_code == 200
        assert cli("tokens", "revoke", str(token_id)).exit_code == 0
        assert c.get("/files", headers=bearer(token)).status_code == 401
    assert cli("tokens", "revoke", "999").output == "cdrflow: error: no API token with id 999 (see 'cdrflow tokens list')\n"


def test_audit_list_shows_newest_first_and_refuses_a_bad_since(cli, runtime):
    cli("users", "add", "sam", "--role", "operator", "--password-stdin", input=PASSWORD)
    shown = cli("audit", "list", "--since", "2000-01-01")
    lines = shown.output.splitlines()
    assert lines[0].split() == ["at", "user", "action", "target", "reason"]
    assert lines[1].split()[1:4] == ["local-admin", "user.add", "sam"]
    assert cli("audit", "list", "--since", "2999-01-01").output == "nothing audited since 2999-01-01\n"
    bad = cli("audit", "list", "--since", "soon")
    assert bad.exit_code == 2 and "neither a day (YYYY-MM-DD) nor an ISO time" in bad.output


def test_closing_a_billing_run_is_audited_once_with_its_reason(client, runtime):
    as_user(client, runtime, "kim", "operator")
    body = {"customer": "ACME", "period": "2026-10", "reason": "month end"}
    first = client.post("/billing-runs", json=body)
    assert first.status_code == 202, first.text
    assert client.post("/billing-runs", json=body).json()["closed_by"] == "kim"  # closed already: nothing new
    [row] = audit_rows(runtime, "billing-run.close")
    assert (row.user, row.target, row.reason) == ("kim", "ACME 2026-10", "month end")
    assert row.detail == {"run_id": first.json()["run_id"], "force": False}
