"""Helpers for tests that call the admin API: it wants a user (services.admin.auth).

- ``authed(client, runtime)``: the TestClient sends the built-in ``local-admin``'s token, the one
  ``create_app`` wrote to ``<data_dir>/admin.token`` (what the CLI on the machine sends);
- ``user_token(runtime, name, role)``: a user of that role and an API token of theirs;
- ``as_user(client, runtime, name, role)``: the TestClient acts as that user through their token;
- ``session_cookie(runtime, name)``: a signed session cookie for that user and its CSRF token, made
  as the SessionMiddleware makes them, so tests of sessions don't depend on the login page."""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any

import itsdangerous
from starlette.testclient import TestClient

from cdrflow.runtime import Runtime
from services.admin import accounts
from services.admin.auth import SESSION_COOKIE, session_secret


def admin_token(runtime: Runtime) -> str:
    return (runtime.settings.data_dir / accounts.ADMIN_TOKEN_FILE).read_text().strip()


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def authed(client: TestClient, runtime: Runtime) -> TestClient:
    """``client`` (of ``create_app(runtime)``), now sending local-admin's API token."""
    client.headers.update(bearer(admin_token(runtime)))
    return client


def api_client(runtime: Runtime, **kwargs: Any) -> TestClient:
    """A TestClient of a new app for ``runtime``, as local-admin."""
    from services.admin.app import create_app

    return authed(TestClient(create_app(runtime), **kwargs), runtime)


def user_token(runtime: Runtime, name: str, role: str, password: str | None = "correct horse battery") -> str:
    """Make user ``name`` (if new) with ``role`` and return a new API token of theirs."""
    with runtime.database.transaction() as session:
        if session.get(accounts.models.User, name) is None:
            accounts.add_user(session, name, role, password)
        _, token = accounts.add_token(session, name, "tests")
    return token


def as_user(client: TestClient, runtime: Runtime, name: str, role: str) -> TestClient:
    client.headers.update(bearer(user_token(runtime, name, role)))
    return client


def session_cookie(runtime: Runtime, name: str, *, seen: int | None = None) -> tuple[str, str]:
    """(cookie value, CSRF token) of a session logged in as ``name``, last seen at ``seen`` (now)."""
    csrf = secrets.token_urlsafe(16)
    data = {"user": name, "csrf": csrf, "seen": int(time.time()) if seen is None else seen}
    payload = base64.b64encode(json.dumps(data).encode())
    cookie = itsdangerous.TimestampSigner(session_secret(runtime.settings)).sign(payload).decode()
    return cookie, csrf


def logged_in(client: TestClient, runtime: Runtime, name: str, **kwargs: Any) -> str:
    """Give ``client`` a session cookie of ``name``; returns the session's CSRF token."""
    cookie, csrf = session_cookie(runtime, name, **kwargs)
    client.cookies.set(SESSION_COOKIE, cookie)
    return csrf


def admin_headers(settings: Any) -> dict[str, str]:
    """Headers for a raw HTTP call (httpx) to an admin service run with ``settings``: the token it
    wrote to ``<data_dir>/admin.token`` at start-up, as the CLI sends it."""
    return bearer((settings.data_dir / accounts.ADMIN_TOKEN_FILE).read_text().strip())
