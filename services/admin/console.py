"""The operator console: server-rendered HTML pages on the admin app, under ``/console/``.

The pages read through the same query functions as the JSON API (``files_api``, ``dlq_api``,
``services.invoicer.unbilled``, ``services.rater.recon``) and change state only through the
same command path: a file command is the admin-command event the API publishes, after the
API's own state checks; a replay is ``dlq_api.replay_letter``. No page edits pipeline state.

Every POST form is checked in this order: the CSRF token (``auth.verify_csrf``), the role
(``auth.require_role``: an operator or admin), then the command; the audit row is written in
the database transaction that checks the command, so a refused command leaves no audit row
and an accepted one can't be sent unrecorded. After a POST the page redirects (303) to the
page it came from, with what happened as a flash message in the session.

``render`` is what every console page (``console_billing`` too) answers with: it gives each
template the signed-in ``user``, the session's ``csrf_token`` and the pending ``flashes``.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from cdrflow.db.models import Call, Carrier, Customer, DeadLetter, File, OutboxEntry
from cdrflow.errors import InputError
from cdrflow.events import Event
from cdrflow.filestatus import FILE_STATUSES
from cdrflow.log import get_logger
from cdrflow.runtime import Runtime
from services.admin import auth
from services.admin.calls_api import money_text
from services.admin.dlq_api import get_letter, letter_view, list_letters, replay_letter
from services.admin import files_api
from services.admin.files_api import STAGE_OF, Publish, check_reverse, list_files, show_file
from services.dedupe.decision import SAME_NAME
from services.dedupe.service import COMMANDS, RETRY
from services.invoicer.credit import REVERSE
from services.invoicer.overlap import OVERLAP_COMMANDS
from services.invoicer.tax import currency
from services.invoicer.unbilled import DayRange, next_period, unbilled_calls
from services.rater.recon import reconciliation

log = get_logger(__name__)

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
CALLS_SHOWN = 200
"""A file's calls listed on its page (its row counts say how many there are in all)."""
NEXT_RUNS_SHOWN = 10
FILE_COMMANDS = (*COMMANDS, RETRY, REVERSE, *OVERLAP_COMMANDS)
NEEDS_REASON = ("release", "discard", REVERSE)
"""Commands the console sends only with a reason: the audit says why, not only who."""
COMMAND_DONE = {"release": "released", "discard": "discarded", RETRY: "sent to be parsed again",
                REVERSE: "reversed", "bill-overlaps": "set to bill its overlapping calls",
                "skip-overlaps": "set to skip its overlapping calls"}
FILE_TABS = ("details", "rows", "calls", "duplicates")

environment = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                          trim_blocks=True, lstrip_blocks=True)
environment.globals["zone"] = ZoneInfo("Europe/London")  # replaced by the settings' zone in console_routes


def local_time(value: str | datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """An ISO timestamp or aware datetime as the operator's local time (the console's zone)."""
    if value is None or value == "":
        return ""
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    except ValueError:  # not a timestamp: shown as it is
        return str(value)
    return moment.astimezone(environment.globals["zone"]).strftime(fmt)


def status_label(status: str | None, hold_reason: str | None = None) -> str:
    """The operator's words for a file's status: a held duplicate is a "Potential Duplicate"."""
    if status == "held":
        return "Same name" if hold_reason == SAME_NAME else "Potential Duplicate"
    return (status or "").capitalize()


def money(amount: Decimal | None) -> str:
    """An amount to the penny, half up, for display (the exact amount stays in the data)."""
    return "" if amount is None else f"{amount.quantize(Decimal('0.01'), ROUND_HALF_UP):f}"


environment.filters["local"] = local_time
environment.filters["money"] = money
environment.filters["status_label"] = status_label


def render(request: Request, template_name: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A console page: the template with ``context`` plus ``user``, ``csrf_token`` and the
    session's pending ``flashes`` (taken, so each is shown once)."""
    flashes = request.session.pop("flashes", []) if "session" in request.scope else []
    page = environment.get_template(template_name).render(
        request=request, user=auth.current_user(request), csrf_token=auth.csrf_token(request), flashes=flashes,
        **context)
    return HTMLResponse(page, status_code=status_code)


def flash(request: Request, text: str, level: str = "info") -> None:
    """A message for the next page rendered in this session (``info`` or ``error``)."""
    request.session["flashes"] = [*request.session.get("flashes", []), {"text": text, "level": level}]


def back(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this site only (never ``//elsewhere``)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/console/"


async def form_of(request: Request) -> dict[str, str]:
    async with request.form(max_files=0, max_fields=20) as form:
        return {k: v for k, v in form.items() if isinstance(v, str)}


async def checked_form(request: Request) -> tuple[dict[str, str], auth.User]:
    """The form of a state-changing POST, after its CSRF token and the user's role are checked."""
    form = await form_of(request)
    auth.verify_csrf(request, form.get("csrf_token"))
    return form, auth.require_role(request, "operator")


# --- the pages' queries (read only) ---------------------------------------------------------------


def dashboard_view(session: Any, runtime: Runtime) -> dict[str, Any]:
    """What the dashboard shows, each figure with the page that lists it."""
    zone = runtime.settings.zone
    now = datetime.now(UTC)
    today = datetime.now(zone).replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)
    today_by_status = dict(session.execute(select(File.status, func.count()).where(File.received_at >= today)
                                           .group_by(File.status)).all())
    stuck_before = now - timedelta(minutes=runtime.settings.stuck_after_minutes)
    groups = reconciliation(session)
    unbilled: Counter[str] = Counter()
    next_runs = []
    for customer in session.scalars(select(Customer).order_by(Customer.code)):
        money = currency(customer.currency)
        unbilled[money.code] += unbilled_calls(session, customer.code, DayRange(), zone).charge_minor(money)
        period = next_period(session, customer, now, zone)
        next_runs.append({"customer": customer.code, "name": customer.name, "period": period.label,
                          "ends": period.end.isoformat(), "schedule": customer.billing_schedule})
    next_runs.sort(key=lambda r: (r["ends"], r["customer"]))
    return {
        "today": [(s, today_by_status[s]) for s in FILE_STATUSES if s in today_by_status],
        "today_total": sum(today_by_status.values()),
        "held": session.scalar(select(func.count()).select_from(File).where(File.status == "held")),
        "failed": session.scalar(select(func.count()).select_from(File).where(File.status == "failed")),
        "stuck": session.scalar(select(func.count()).select_from(File).where(
            File.status.in_(tuple(STAGE_OF)), File.updated_at < stuck_before)),
        "recon_calls": sum(g.calls for g in groups),
        "recon_cost": sum((g.cost for g in groups), Decimal(0)),
        "unbilled": [(code, money_text(minor, currency(code))) for code, minor in sorted(unbilled.items())],
        "next_runs": next_runs[:NEXT_RUNS_SHOWN],
        "dead_letters": session.scalar(select(func.count()).select_from(DeadLetter)
                                       .where(DeadLetter.replayed_at.is_(None))),
    }


def file_calls(session: Any, file_id: str) -> list[Call]:
    return list(session.scalars(select(Call).where(Call.file_id == file_id).order_by(Call.row).limit(CALLS_SHOWN)))


def arrival_details(session: Any, file_id: str) -> dict[str, Any]:
    """What the file-arrived event said of where the file came from (uploaded name, remote path,
    mail message), when the admin outbox still holds it; {} otherwise."""
    entry = session.scalar(select(OutboxEntry).where(OutboxEntry.event_id == file_id))
    if entry is None:
        return {}
    details = Event.from_bytes(entry.payload).data.get("details")
    return details if isinstance(details, dict) else {}


def reverse_refusal(session: Any, view: dict[str, Any]) -> str | None:
    """Why billing does not allow reversing this file (``files_api.check_reverse``), or None
    when it does: the page offers Reverse only then."""
    if view.get("status") in ("arriving", "arrived"):
        return "the file is not recorded yet"
    try:
        return "it is reversed already" if check_reverse(session, view["file_id"]) == "already" else None
    except HTTPException as exc:
        return str(exc.detail)


def carrier_codes(session: Any) -> list[str]:
    return list(session.scalars(select(Carrier.code).order_by(Carrier.code)))


# --- the file command path: as POST /files/{id}/{command} ------------------------------------------


def run_file_command(runtime: Runtime, publish: Publish, user: auth.User, file_id: str, command: str,
                     reason: str) -> str:
    """``files_api.send_file_command``, the API's own path (checked, audited with the event in one
    transaction, published); returns what the operator is told. Raises HTTPException (404/409)
    with the API's reason when the file's state forbids it."""
    command_id, announced = files_api.send_file_command(
        runtime, publish, file_id, command, reason, user.name,
        lambda session: auth.audit(session, user, f"file.{command}", file_id, reason or None))
    if command_id is None:
        return f"file {file_id} was {COMMAND_DONE[command]} already: nothing new sent"
    log.info("console_file_command", file_id=file_id, command=command, operator=user.name, announced=announced)
    queued = "" if announced else " (the broker is not reachable: it goes out when the broker is back)"
    return f"{command.capitalize()} sent: file {file_id} will be {COMMAND_DONE[command]}{queued}"


# --- routes ---------------------------------------------------------------------------------------


def console_routes(runtime: Runtime, publish: Publish) -> list[BaseRoute]:
    """The console's pages (and the billing pages of ``console_billing``), ``GET /`` (303 to the
    dashboard) and the static assets under ``/console/static/``."""
    environment.globals["zone"] = runtime.settings.zone
    database = runtime.database

    async def login_page(request: Request) -> Response:
        if auth.current_user(request) is not None:
            return back(safe_next(request.query_params.get("next")))
        return render(request, "login.html", next=safe_next(request.query_params.get("next")), name="")

    async def login(request: Request) -> Response:
        form = await form_of(request)
        auth.verify_csrf(request, form.get("csrf_token"))
        name, target = form.get("name", "").strip(), safe_next(form.get("next"))

        def check() -> auth.User | None:
            with database.transaction() as session:
                user = auth.authenticate(session, name, form.get("password", ""))
                if user is not None:
                    auth.audit(session, user, "user.log-in", user.name)
                return user

        user = await run_in_threadpool(check) if name else None
        if user is None:
            return render(request, "login.html", status_code=401, next=target, name=name,
                          error="Wrong name or password, or the user is disabled.")
        auth.log_in(request, user)
        return back(target)

    async def logout(request: Request) -> Response:
        form = await form_of(request)
        auth.verify_csrf(request, form.get("csrf_token"))
        auth.log_out(request)
        return back("/login")

    def dashboard(request: Request) -> Response:
        with database.transaction() as session:
            view = dashboard_view(session, runtime)
        return render(request, "dashboard.html", nav="dashboard", **view)

    def files(request: Request) -> Response:
        query = {k: v.strip() for k, v in request.query_params.items() if v.strip()}
        error = None
        with database.transaction() as session:
            carriers = carrier_codes(session)
            try:
                found = list_files(session, query, runtime)
            except InputError as exc:  # a status or billing period that is not one
                found, error = [], str(exc)
        found.reverse()  # newest first
        counts = Counter(status_label(f["status"], f.get("hold_reason")) for f in found)
        return render(request, "files.html", nav="files", files=found, counts=sorted(counts.items()),
                      query=query, carriers=carriers, statuses=FILE_STATUSES, error=error,
                      status_code=422 if error else 200)

    async def file_page(request: Request) -> Response:
        file_id = request.path_params["file_id"]
        tab = request.query_params.get("tab", "details")
        if tab not in FILE_TABS:
            tab = "details"

        def load() -> dict[str, Any]:
            with database.transaction() as session:
                view = show_file(session, file_id, runtime)
                return {"f": view, "calls": file_calls(session, file_id),
                        "details": arrival_details(session, file_id), "reverse": reverse_refusal(session, view)}

        try:
            loaded = await run_in_threadpool(load)
        except HTTPException as exc:
            return render(request, "error.html", status_code=exc.status_code, title="No such file",
                          message=str(exc.detail))
        return render(request, "file.html", nav="files", tab=tab, tabs=FILE_TABS, **loaded)

    async def file_command(request: Request) -> Response:
        file_id, command = request.path_params["file_id"], request.path_params["command"]
        form, user = await checked_form(request)
        here = f"/console/files/{file_id}" + (f"?tab={form['tab']}" if form.get("tab") in FILE_TABS else "")
        if command not in FILE_COMMANDS:
            return render(request, "error.html", status_code=404, title="No such command",
                          message=f"no such file command {command!r}: use {', '.join(FILE_COMMANDS)}")
        reason = form.get("reason", "").strip()
        if command in NEEDS_REASON and not reason:
            flash(request, f"{command.capitalize()} needs a reason: it is recorded with who and when.", "error")
            return back(here)
        try:
            flash(request, await run_in_threadpool(run_file_command, runtime, publish, user, file_id, command,
                                                   reason))
        except HTTPException as exc:
            flash(request, f"{command.capitalize()} refused: {exc.detail}", "error")
        return back(here)

    def upload_page(request: Request) -> Response:
        with database.transaction() as session:
            carriers = carrier_codes(session)
        return render(request, "upload.html", nav="upload", carriers=carriers)

    def dead_letters(request: Request) -> Response:
        service = request.query_params.get("service", "").strip() or None
        shown = request.query_params.get("show", "")
        try:
            with database.transaction() as session:
                letters = list_letters(session, service)
                letter = letter_view(get_letter(session, int(shown))) if shown.isdigit() else None
        except HTTPException as exc:
            return render(request, "error.html", status_code=exc.status_code, title="No such dead letter",
                          message=str(exc.detail))
        return render(request, "dead_letters.html", nav="dead_letters", letters=letters[::-1], service=service,
                      letter=letter)

    async def replay(request: Request) -> Response:
        form, user = await checked_form(request)
        text = request.path_params["letter_id"]
        if not text.isdigit():
            return render(request, "error.html", status_code=404, title="No such dead letter",
                          message=f"no dead letter {text!r}: a dead letter's id is a number")
        letter_id, reason = int(text), form.get("reason", "").strip()

        def run() -> str:
            with database.transaction() as session:
                letter = replay_letter(session, letter_id, user.name)
                auth.audit(session, user, "dead-letter.replay", str(letter_id), reason or None)
                return f"Dead letter {letter.id} replayed to {letter.topic}"

        try:
            flash(request, await run_in_threadpool(run))
        except HTTPException as exc:
            flash(request, f"Replay refused: {exc.detail}", "error")
        return back("/console/dead-letters")

    routes: list[BaseRoute] = [
        Route("/", lambda _: back("/console/"), methods=["GET"], include_in_schema=False),
        Mount("/console/static", app=StaticFiles(directory=STATIC), name="console-static"),
        Route("/login", login_page, methods=["GET"], include_in_schema=False),
        Route("/login", login, methods=["POST"], include_in_schema=False),
        Route("/logout", logout, methods=["POST"], include_in_schema=False),
        Route("/console/", dashboard, methods=["GET"], include_in_schema=False),
        Route("/console/files", files, methods=["GET"], include_in_schema=False),
        Route("/console/files/{file_id}", file_page, methods=["GET"], include_in_schema=False),
        Route("/console/files/{file_id}/{command}", file_command, methods=["POST"], include_in_schema=False),
        Route("/console/upload", upload_page, methods=["GET"], include_in_schema=False),
        Route("/console/dead-letters", dead_letters, methods=["GET"], include_in_schema=False),
        Route("/console/dead-letters/{letter_id}/replay", replay, methods=["POST"], include_in_schema=False),
    ]
    # Imported here, not at the top: console_billing imports ``render`` and the form helpers from this module.
    from services.admin.console_billing import console_billing_routes

    return [*routes, *console_billing_routes(runtime, publish)]
