"""The operator's view of files: list with filters, one file in detail with its rejections and
the files it may repeat (compared side by side); release or discard of a held file; retry of a
failed or stuck file; billing or skipping a file's overlapping calls; reversing a processed file.

Commands are admin-command events: release, discard and retry are handled by the dedupe
service, bill-overlaps, skip-overlaps and reverse by the invoicer. This API only checks the file's state
first, so that an operator gets the reason for a refusal at once.

A file that stops moving says so: one accepted or parsed and unchanged for longer than
``stuck_after_minutes`` is shown ``stuck`` with where it stopped; one whose message was
dead-lettered is ``failed`` with the service's reason. An upload stored while the broker was
down is shown ``arriving`` until its file-arrived event is published.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cdrflow.bus import Topic, topic_name
from cdrflow.db.models import (
    Call,
    Carrier,
    CarrierTransaction,
    File,
    FileDecision,
    FileReversal,
    OutboxEntry,
    RejectedRow,
)
from cdrflow.errors import BadFileError, InputError
from cdrflow.events import Event, EventType
from cdrflow.filestatus import file_status
from cdrflow.runtime import Runtime
from services.admin.auth import audit_request
from services.dedupe.compare import dates_as_text, first_difference, profile
from services.dedupe.service import COMMANDS, RETRY, RETRYABLE, candidate_view, candidates_of
from services.invoicer.credit import REVERSE, ReverseRefusedError, UnknownFileError, check_reversible
from services.invoicer.overlap import OVERLAP_COMMANDS
from services.invoicer.periods import month_period
from services.parser.formats import carrier_format
from services.rater.fees import fee_counts, fee_views

Publish = Callable[..., bool]
"""``publish(topic, key, event, audited=None)`` of ``services.admin.app``."""
"""Queues an event in the outbox; returns whether the broker acknowledged it already."""
FILTERS = ("carrier", "kind", "status", "period", "direction", "channel")
"""Exact-match filters of ``GET /files``; ``month`` (the billing period, YYYY-MM) is the other one."""
REJECTIONS_SHOWN = 200
FEES_SHOWN = 500
STAGE_OF = {"accepted": "parsing", "parsed": "rating"}
"""Where a file in each in-flight status is waiting: the stage that moves it next."""


def stuck_reason(file: File, stuck_after: timedelta, now: datetime | None = None) -> str | None:
    """Why a file that stopped moving is stuck, or None while it is moving (or done)."""
    stage = STAGE_OF.get(file.status)
    if stage is None:
        return None
    idle = (now or datetime.now(UTC)) - file.updated_at
    if idle < stuck_after:
        return None
    return (f"stuck at {stage}: {file.status} {int(idle.total_seconds() // 60)} min ago and not moved since "
            f"(cdrflow dlq list shows failed messages; cdrflow files retry {file.id} sends it through again)")


def file_view(file: File, candidates: list[File] | None = None, stuck_after: timedelta | None = None) -> dict[str, Any]:
    stuck = stuck_reason(file, stuck_after) if stuck_after is not None else None
    view = file.metadata_for_event() | {
        "content_fingerprint": file.content_fingerprint, "channel": file.channel,
        "received_at": file.received_at.isoformat(), "status": file.status,
        "status_reason": stuck or file.status_reason, "stuck": stuck is not None,
        "hold_reason": file.hold_reason, "rows": file.rows, "rejected": file.rejected, "calls": file.calls,
        "overlapping_calls": file.overlapping_calls, "overlaps": file.overlaps, "overlap_policy": file.overlap_policy,
    }
    if candidates is not None:
        view["candidates"] = [candidate_view(c) for c in candidates]
    return view


def list_files(session: Session, query: dict[str, str], runtime: Runtime) -> list[dict[str, Any]]:
    """Files matching the exact-match ``FILTERS`` and ``month``; ``status`` may be an operator's
    word for one (``potential-duplicate``), and one that names no status is refused (422)."""
    if query.get("status"):
        query = query | {"status": file_status(query["status"])}
    stmt = select(File).order_by(File.received_at, File.id)
    for name in FILTERS:
        if value := query.get(name):
            stmt = stmt.where(getattr(File, name) == value)
    if label := query.get("month"):
        stmt = stmt.where(in_billing_period(label, runtime))
    stuck_after = timedelta(minutes=runtime.settings.stuck_after_minutes)
    views = [file_view(f, stuck_after=stuck_after) for f in session.scalars(stmt)]
    if not any(query.get(name) for name in (*FILTERS, "month")) or query.get("status") == "arriving":
        views.extend(arriving_files(session, runtime))
    return views


def arriving_files(session: Session, runtime: Runtime) -> list[dict[str, Any]]:
    """Uploads stored while the broker was down: their file-arrived event waits in the outbox."""
    arrived = topic_name(runtime.settings.namespace, Topic.FILE_ARRIVED)
    pending = session.scalars(select(OutboxEntry).where(OutboxEntry.topic == arrived,
                                                        OutboxEntry.published_at.is_(None)).order_by(OutboxEntry.id))
    return [arriving_view(Event.from_bytes(entry.payload)) for entry in pending]


def arriving_view(event: Event) -> dict[str, Any]:
    d = event.data
    return {k: d.get(k) for k in ("file_id", "fingerprint", "carrier", "kind", "period", "direction",
                                  "original_name", "size", "channel", "received_at")} | {
        "status": "arriving", "stuck": False,
        "status_reason": "stored; its announcement waits for the broker and goes out when it is back"}


def in_billing_period(label: str, runtime: Runtime):  # type: ignore[no-untyped-def]
    """A file belongs to a billing period when one of its calls starts in it, or one of its fees'
    periods starts in it; a file with neither (held, failed, not yet parsed) by when it arrived."""
    period = month_period(label)
    start, end = period.utc_bounds(runtime.settings.zone)
    has_call = exists().where(Call.file_id == File.id)
    has_fee = exists().where(CarrierTransaction.file_id == File.id)
    return (
        exists().where(Call.file_id == File.id, Call.start >= start, Call.start < end)
        | exists().where(CarrierTransaction.file_id == File.id, CarrierTransaction.period_start >= period.start,
                         CarrierTransaction.period_start < period.end)
        | (~has_call & ~has_fee & (File.received_at >= start) & (File.received_at < end))
    )


def show_file(session: Session, file_id: str, runtime: Runtime) -> dict[str, Any]:
    file = session.get(File, file_id)
    if file is None:
        entry = session.scalar(select(OutboxEntry).where(OutboxEntry.event_id == file_id))
        if entry is not None and entry.published_at is None:
            return arriving_view(Event.from_bytes(entry.payload))
        if entry is not None:
            return arriving_view(Event.from_bytes(entry.payload)) | {
                "status": "arrived", "status_reason": "announced; the dedupe service has not recorded it yet"}
        raise HTTPException(404, f"no file {file_id}")
    candidates = candidates_of(session, file.id)
    view = file_view(file, candidates, stuck_after=timedelta(minutes=runtime.settings.stuck_after_minutes))
    rejections = session.scalars(select(RejectedRow).where(RejectedRow.file_id == file.id)
                                 .order_by(RejectedRow.row).limit(REJECTIONS_SHOWN))
    view["rejections"] = [{"row": r.row, "reason": r.reason, "raw": r.raw} for r in rejections]
    view["rejections_total"] = session.scalar(select(func.count()).select_from(RejectedRow)
                                              .where(RejectedRow.file_id == file.id))
    if file.kind == "sdr":  # its fixed-fee lines: whose, priced at what, or why not billed
        view["fee_counts"] = fee_counts(session, file.id)
        view["fees"] = fee_views(session, file.id, FEES_SHOWN)
        view["fees_total"] = session.scalar(select(func.count()).select_from(CarrierTransaction)
                                            .where(CarrierTransaction.file_id == file.id))
    decision = session.get(FileDecision, file.id)
    view["decision"] = None if decision is None else {
        "command": decision.command, "operator": decision.operator, "reason": decision.reason,
        "decided_at": decision.decided_at.isoformat()}
    reversal = session.get(FileReversal, file.id)
    view["reversal"] = None if reversal is None else {
        "operator": reversal.operator, "reason": reversal.reason, "reversed_at": reversal.reversed_at.isoformat()}
    if candidates:
        view["comparisons"] = [compare(session, file, c, runtime) for c in candidates]
    return view


def compare(session: Session, file: File, candidate: File, runtime: Runtime) -> dict[str, Any]:
    """Row counts and date ranges of both files (as the parser reads them) and their first differing line."""
    result: dict[str, Any] = {"file_id": candidate.id}
    for side, f in (("this", file), ("candidate", candidate)):
        try:
            definition, options = carrier_format(session, session.get(Carrier, f.carrier), f.kind)
            with runtime.store.open(f.fingerprint) as fh:
                p = profile(fh, definition, name=f.original_name, zone=runtime.settings.zone, options=options)
            result[side] = {"rows": p.rows, "rejected": p.rejected, "first": dates_as_text(p.first),
                            "last": dates_as_text(p.last)}
        except BadFileError as exc:
            result[side] = {"error": str(exc)}
    try:
        with runtime.store.open(file.fingerprint) as a, runtime.store.open(candidate.fingerprint) as b:
            diff = first_difference(a, b, name=file.original_name, other_name=candidate.original_name)
        result["identical_content"] = diff is None
        result["first_difference"] = None if diff is None else {"line": diff.line, "this": diff.this,
                                                                 "candidate": diff.other}
    except BadFileError as exc:
        result["first_difference"] = {"error": str(exc)}
    return result


def check_command(session: Session, file_id: str, command: str) -> str | None:
    """None when the command should be sent; "already" when it was applied before (idempotent);
    raises HTTPException(409) with the reason when the file's state forbids it."""
    file = session.get(File, file_id)
    if file is None:
        raise HTTPException(404, f"no file {file_id}")
    decided = session.get(FileDecision, file_id)
    if decided is not None:
        if decided.command == command:
            return "already"
        raise HTTPException(409, f"file {file_id} was {COMMANDS[decided.command]} by {decided.operator} at "
                                 f"{decided.decided_at:%Y-%m-%d %H:%M} UTC: it can't be {COMMANDS[command]} now")
    if file.status != "held":
        raise HTTPException(409, f"file {file_id} is {file.status}, not held: only a held file (a Potential "
                                 f"Duplicate or same name) can be {COMMANDS[command]}")
    return None


def check_retry(session: Session, file_id: str) -> None:
    """A retry is for a failed file or one on its way (stuck, or an operator sure it is);
    anything else is refused with what the file is."""
    file = session.get(File, file_id)
    if file is None:
        raise HTTPException(404, f"no file {file_id}")
    if file.status not in RETRYABLE:
        raise HTTPException(409, f"file {file_id} is {file.status}: only a failed or stuck file (accepted or "
                                 "parsed and not moving) can be retried")


def check_overlap_command(session: Session, file_id: str, command: str) -> str | None:
    """As ``check_command``, for bill-overlaps / skip-overlaps: the file must have overlapping calls."""
    file = session.get(File, file_id)
    if file is None:
        raise HTTPException(404, f"no file {file_id}")
    if not file.overlapping_calls:
        known = "" if file.status == "rated" else f" (it is {file.status}: overlaps are known once it is rated)"
        raise HTTPException(409, f"file {file_id} has no overlapping calls{known}: nothing to bill or skip")
    return "already" if file.overlap_policy == OVERLAP_COMMANDS[command] else None


def check_reverse(session: Session, file_id: str) -> str | None:
    """As ``check_command``, for reverse (``services.invoicer.credit.check_reversible``)."""
    try:
        return "already" if check_reversible(session, file_id) is None else None
    except UnknownFileError as exc:
        raise HTTPException(404, str(exc)) from exc
    except ReverseRefusedError as exc:
        raise HTTPException(409, str(exc)) from exc


def check_file_command(session: Session, file_id: str, command: str) -> str | None:
    """Whether the file's state allows ``command`` (HTTPException 404/409 with the reason if not);
    ``"already"`` when it was carried out already."""
    if command == REVERSE:
        return check_reverse(session, file_id)
    if command in OVERLAP_COMMANDS:
        return check_overlap_command(session, file_id, command)
    if command == RETRY:
        return check_retry(session, file_id)
    return check_command(session, file_id, command)


def send_file_command(runtime: Runtime, publish: Publish, file_id: str, command: str, reason: str, operator: str,
                      audited: Callable[[Session], None]) -> tuple[str | None, bool]:
    """A file command as the API and the console give it: checked against the file's state, then
    its admin-command event queued in the outbox with its audit row (``audited``), in one
    transaction. Returns the command's id and whether the broker has it already; ``(None,
    False)`` when the command was carried out already (nothing sent, nothing audited)."""
    with runtime.database.transaction() as session:
        if check_file_command(session, file_id, command) == "already":
            return None, False
    command_id = str(uuid.uuid4())
    event = Event(type=EventType.ADMIN_COMMAND, source=runtime.source, subject=file_id, id=command_id,
                  data={"command": command, "file_id": file_id, "operator": operator, "reason": reason})
    return command_id, publish(Topic.ADMIN_COMMANDS, file_id, event, audited)


def files_routes(runtime: Runtime, publish: Publish) -> list[Route]:
    def list_endpoint(request: Request) -> Response:
        with runtime.database.transaction() as session:
            return JSONResponse(list_files(session, dict(request.query_params), runtime))

    async def show_endpoint(request: Request) -> Response:
        def show() -> dict[str, Any]:
            with runtime.database.transaction() as session:
                return show_file(session, request.path_params["file_id"], runtime)

        return JSONResponse(await run_in_threadpool(show))

    async def command_endpoint(request: Request) -> Response:
        file_id, command = request.path_params["file_id"], request.path_params["command"]
        if command not in COMMANDS and command not in OVERLAP_COMMANDS and command not in (RETRY, REVERSE):
            raise HTTPException(404, f"no such file command {command!r}: use release, discard, retry, "
                                     "bill-overlaps, skip-overlaps or reverse")
        try:
            body = await request.json() if await request.body() else {}
        except ValueError as exc:  # not JSON, or not UTF-8
            raise InputError(f"the request body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise InputError("the body of a file command is a JSON object such as {\"reason\": \"...\"}")
        reason = str(body.get("reason") or "").strip()
        operator = request.headers.get("x-operator", "operator")
        if command == REVERSE and not reason:
            raise InputError(f"reversing file {file_id} needs a reason (recorded with who and when)")

        command_id, announced = await run_in_threadpool(
            send_file_command, runtime, publish, file_id, command, reason, operator,
            lambda session: audit_request(session, request, f"file.{command}", file_id, reason or None))
        if command_id is None:
            return JSONResponse({"command": command, "file_id": file_id, "already": True}, status_code=200)
        return JSONResponse({"command_id": command_id, "command": command, "file_id": file_id,
                             "announced": announced}, status_code=202)

    return [
        Route("/files", list_endpoint, methods=["GET"]),
        Route("/files/{file_id}", show_endpoint, methods=["GET"]),
        Route("/files/{file_id}/{command}", command_endpoint, methods=["POST"]),
    ]
