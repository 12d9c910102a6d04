"""Who is asking, and may they: logins with signed session cookies, API tokens for automation,
roles, CSRF tokens, and the audit row every state change writes.

Each request to the admin app goes through, in this order:

1. ``SessionMiddleware`` (Starlette, itsdangerous): the session is a signed cookie, HttpOnly and
   SameSite=strict, re-signed on every answer; one not renewed for ``SESSION_IDLE`` (8 h) is
   refused, so a session expires after 8 idle hours.
2. ``AuthMiddleware``: finds the user, from ``Authorization: Bearer <API token>`` if sent (a bad
   token is refused even with a good cookie), else from the session. The user is looked up in
   the database on every request, so disabling a user stops their sessions and tokens at once.
   Public paths (``PUBLIC``) need nobody. Without a user: 401 JSON for the API, 303 to
   ``/login?next=...`` for the console's pages. A viewer may only read (GET/HEAD/OPTIONS): any
   other method is 403. A change through the API by a browser session (cookie, no token) must
   carry the session's CSRF token in ``X-CSRF-Token``; console forms carry it as the field
   ``csrf_token``, checked by their handlers with ``verify_csrf``. The ``x-operator`` header the
   handlers record is set to the user's name (only the CLI's built-in ``local-admin`` may name
   the person it acts for, as ``cdrflow ... --operator`` does).
3. The handler: ``require_role`` for finer checks, ``audit`` in the transaction of the change.

The session secret is ``CDRFLOW_SECRET_KEY`` when set (a key derived from it, so the cookie
signature never reveals anything about the key that encrypts source passwords), else a random key
kept in ``<data_dir>/session.key`` (0600), so sessions survive a restart."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any
from urllib.parse import quote

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from cdrflow.db import Database
from cdrflow.settings import Settings
from services.admin.accounts import LOCAL_ADMIN, ROLES, User, active_user, token_user, write_audit, write_private
from services.admin.accounts import authenticate as _authenticate

__all__ = ["ROLES", "User", "current_user", "require_role", "authenticate", "log_in", "log_out", "csrf_token",
           "verify_csrf", "audit", "audit_request", "auth_middleware", "AuthMiddleware", "session_secret"]

SESSION_COOKIE = "cdrflow_session"
SESSION_IDLE = 8 * 60 * 60
"""Seconds a session lives without a request."""

SESSION_KEY_FILE = "session.key"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"

PUBLIC = ("/health", "/login", "/openapi.json")
PUBLIC_PREFIXES = ("/console/static/",)
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
ANY_USER_MAY_POST = ("/login", "/logout")
"""A viewer may log in and out; every other change needs an operator."""


def _is_page(path: str) -> bool:
    """The console's HTML pages (a browser is redirected to the login page), not the JSON API."""
    return path in ("/", "/console", "/logout") or path.startswith("/console/")


def _is_public(path: str) -> bool:
    return path in PUBLIC or path.startswith(PUBLIC_PREFIXES)


# --- who is asking ------------------------------------------------------------------------


def current_user(request: Request) -> User | None:
    """The user the middleware found for this request (None on public paths or without one)."""
    return getattr(request.state, "user", None)


def _who_may(role: str) -> str:
    allowed = ROLES[ROLES.index(role):]
    names = ", ".join(allowed[:-1]) + (" or " if len(allowed) > 1 else "") + allowed[-1]
    return ("an " if names[0] in "aeiou" else "a ") + names


def require_role(request: Request, role: str, action: str = "do this") -> User:
    """The user, if their role is ``role`` or more; else 401 (nobody) or 403 (saying who may)."""
    user = current_user(request)
    if user is None:
        raise HTTPException(401, "log in first, or send an API token (Authorization: Bearer ...)")
    if not user.can(role):
        article = "an" if user.role[0] in "aeiou" else "a"
        raise HTTPException(403, f"{user.name} is {article} {user.role}: only {_who_may(role)} can {action}")
    return user


def authenticate(session: Session, name: str, password: str) -> User | None:
    """The user if the password is theirs (argon2) and they aren't disabled; else None."""
    return _authenticate(session, name, password)


# --- sessions and CSRF --------------------------------------------------------------------


def log_in(request: Request, user: User) -> None:
    """Start a fresh session for ``user`` (anything from before, e.g. a CSRF token of the login
    form, is dropped, so a session planted before the login is worth nothing after it)."""
    request.session.clear()
    request.session.update({"user": user.name, "csrf": secrets.token_urlsafe(32), "seen": int(time.time())})
    request.state.user = user


def log_out(request: Request) -> None:
    request.session.clear()
    request.state.user = None


def csrf_token(request: Request) -> str:
    """The session's CSRF token (made on first use, also before a login: the login form has one)."""
    token = request.session.get("csrf")
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def verify_csrf(request: Request, submitted: str | None) -> None:
    """403 unless ``submitted`` is this session's CSRF token."""
    expected = request.session.get("csrf") if "session" in request.scope else None
    if not submitted:
        raise HTTPException(403, "CSRF token missing: reload the page and send the form again")
    if not isinstance(expected, str) or not hmac.compare_digest(expected.encode(), submitted.encode()):
        raise HTTPException(403, "CSRF token wrong or expired: reload the page and send the form again")


def session_secret(settings: Settings) -> str:
    """The key that signs session cookies (see the module docstring)."""
    if settings.secret_key:
        return hashlib.sha256(b"cdrflow session cookie\0" + settings.secret_key.encode()).hexdigest()
    path = settings.data_dir / SESSION_KEY_FILE
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        key = ""
    if len(key) < 32:
        write_private(path, secrets.token_hex(32) + "\n", replace=not path.exists())
        key = path.read_text().strip()  # the key of whichever process made it first
    return key


# --- audit --------------------------------------------------------------------------------


def audit(session: Session, user: User | None, action: str, target: str, reason: str | None = None,
          detail: dict[str, Any] | None = None) -> None:
    """One audit row (who, what, on what, why), inside the caller's transaction: it is committed
    with the change, or not at all. ``action`` is ``noun.verb`` (``file.release``)."""
    write_audit(session, user.name if user else None, action, target, reason, detail)


def audit_request(session: Session, request: Request, action: str, target: str, reason: str | None = None,
                  detail: dict[str, Any] | None = None) -> None:
    """``audit`` for the user of this request; notes the person the CLI named (``--operator``) when
    ``local-admin`` acts for someone."""
    user = current_user(request)
    operator = request.headers.get("x-operator")
    if user is not None and operator and operator != user.name:
        detail = {"operator": operator} | (detail or {})
    audit(session, user, action, target, reason, detail)


# --- the middleware -----------------------------------------------------------------------


def auth_middleware(settings: Settings, database: Database) -> list[Middleware]:
    """The two middlewares, outermost first, for ``Starlette(middleware=...)``."""
    return [
        Middleware(SessionMiddleware, secret_key=session_secret(settings), session_cookie=SESSION_COOKIE,
                   max_age=SESSION_IDLE, same_site="strict", https_only=False),
        Middleware(AuthMiddleware, database=database),
    ]


def _refuse(path: str, status: int, message: str) -> Response:
    if _is_page(path):
        return Response(f"{status}: {message}\n", status_code=status, media_type="text/plain; charset=utf-8")
    headers = {"www-authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class AuthMiddleware:
    """Sets ``request.state.user`` and refuses what the user may not do (see the module docstring).
    A plain ASGI middleware, so uploads stream through it untouched."""

    def __init__(self, app: ASGIApp, database: Database) -> None:
        self.app = app
        self.database = database

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        request.state.user = None
        path = scope["path"]
        if _is_public(path):
            await self.app(scope, receive, send)
            return
        authorization = request.headers.get("authorization", "")
        by_token = authorization[:7].lower() == "bearer "
        if by_token:
            user = await run_in_threadpool(self._token_user, authorization[7:].strip())
            if user is None:
                await _refuse(path, 401, "the API token is unknown, revoked or its user disabled")(scope, receive, send)
                return
        else:
            user = await self._session_user(request)
        if user is None:
            await self._unauthenticated(request)(scope, receive, send)
            return
        method = scope["method"]
        if method not in SAFE_METHODS and path not in ANY_USER_MAY_POST:
            if not user.can("operator"):
                await _refuse(path, 403, f"{user.name} is a viewer: only an operator or admin can change anything "
                                         f"({method} {path})")(scope, receive, send)
                return
            if not by_token and not _is_page(path):
                submitted = request.headers.get(CSRF_HEADER)
                expected = request.session.get("csrf")
                if not submitted or not isinstance(expected, str) or not hmac.compare_digest(
                        expected.encode(), submitted.encode()):
                    await _refuse(path, 403, "CSRF token missing or wrong: a change made with the session cookie "
                                             f"must send the session's token in the {CSRF_HEADER} header"
                                  )(scope, receive, send)
                    return
        request.state.user = user
        _set_operator(scope, user)
        await self.app(scope, receive, send)

    def _token_user(self, token: str) -> User | None:
        with self.database.transaction() as session:
            return token_user(session, token)

    def _active_user(self, name: str) -> User | None:
        with self.database.transaction() as session:
            return active_user(session, name)

    async def _session_user(self, request: Request) -> User | None:
        if "session" not in request.scope:
            return None
        session = request.session
        name, seen = session.get("user"), session.get("seen")
        if not isinstance(name, str):
            return None
        now = int(time.time())
        if not isinstance(seen, int) or now - seen > SESSION_IDLE:
            session.clear()
            return None
        user = await run_in_threadpool(self._active_user, name)
        if user is None:
            session.clear()
            return None
        session["seen"] = now
        return user

    @staticmethod
    def _unauthenticated(request: Request) -> Response:
        path = request.url.path
        if not _is_page(path):
            return _refuse(path, 401, "log in first, or send an API token (Authorization: Bearer ...)")
        if request.method != "GET" or path == "/logout":
            return RedirectResponse("/login", status_code=303)
        target = path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)


def _set_operator(scope: Scope, user: User) -> None:
    """The handlers record ``x-operator`` as who did it: make it the user's name, so nobody can
    claim to be someone else; only ``local-admin`` (the CLI on this machine) may name its operator."""
    headers = [(k, v) for k, v in scope["headers"] if k != b"x-operator"]
    named = [v for k, v in scope["headers"] if k == b"x-operator"]
    operator = named[0] if user.name == LOCAL_ADMIN and named and named[0].strip() else user.name.encode()
    scope["headers"] = [*headers, (b"x-operator", operator)]

