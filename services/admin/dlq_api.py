"""Dead letters operators can act on: list them, show one with its original payload, replay it.

A dead letter is a message a service could not process (a bad envelope, a handler error, an
event the broker refused); the service loop stores it as a ``dead_letters`` row and the
stream goes on. After the cause is fixed, a replay sends the original payload, with its
original key, to the original topic, so the message goes through the service again (its
handlers are idempotent).

A replay goes through once. The steps, in one database transaction:
1. read the dead letter, locked (``FOR UPDATE`` on PostgreSQL);
2. refuse it (409, saying when and by whom) if it was replayed already;
3. queue the payload in the outbox as entry ``replay-<id>`` for the admin service's relay;
4. mark the letter replayed, by whom and when; commit.
The outbox entry's unique id is the backstop: two replays racing past step 2 can't both
commit, and the loser is refused like any second replay.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cdrflow.bus.deadletter import letter_mark, payload_as_text
from cdrflow.bus.outbox import add_raw_to_outbox
from cdrflow.db.models import DeadLetter, File
from cdrflow.errors import InputError
from cdrflow.log import get_logger
from cdrflow.runtime import Runtime
from services.admin.auth import audit_request

log = get_logger(__name__)

REPLAY_PUBLISHER = "admin"
"""Replays are published by the admin service's outbox relay."""


def replay_entry_id(letter_id: int) -> str:
    """The outbox entry of a letter's replay: one per letter, which is what makes a replay go through once."""
    return f"replay-{letter_id}"


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def letter_summary(letter: DeadLetter) -> dict[str, Any]:
    """What ``GET /dead-letters`` lists: everything but the payload."""
    return {
        "id": letter.id, "service": letter.service, "topic": letter.topic, "partition": letter.partition,
        "offset": letter.offset, "key": letter.key, "event_type": letter.event_type, "file_id": letter.file_id,
        "error_type": letter.error_type, "error": letter.error, "failed_at": _iso(letter.failed_at),
        "replayed_at": _iso(letter.replayed_at), "replayed_by": letter.replayed_by,
    }


def letter_view(letter: DeadLetter) -> dict[str, Any]:
    payload, encoding = payload_as_text(letter.payload)
    return letter_summary(letter) | {"event_id": letter.event_id, "payload": payload, "payload_encoding": encoding}


def letter_id_of(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise HTTPException(404, f"no dead letter {text!r}: a dead letter's id is a number "
                                 "(see 'cdrflow dlq list')") from None


def get_letter(session: Session, letter_id: int, *, for_update: bool = False) -> DeadLetter:
    letter = session.get(DeadLetter, letter_id, with_for_update=for_update)
    if letter is None:
        raise HTTPException(404, f"no dead letter {letter_id} (see 'cdrflow dlq list')")
    return letter


def list_letters(session: Session, service: str | None) -> list[dict[str, Any]]:
    stmt = select(DeadLetter).order_by(DeadLetter.id)
    if service:
        stmt = stmt.where(DeadLetter.service == service)
    return [letter_summary(letter) for letter in session.scalars(stmt)]


def already_replayed(letter: DeadLetter) -> HTTPException:
    if letter.replayed_at is None:  # the outbox entry exists but the letter is not marked: never by this API
        return HTTPException(409, f"a replay of dead letter {letter.id} is already queued "
                                  f"(outbox entry {replay_entry_id(letter.id)})")
    return HTTPException(409, f"dead letter {letter.id} was replayed by {letter.replayed_by} at "
                              f"{letter.replayed_at:%Y-%m-%d %H:%M:%S} UTC: a dead letter is replayed once. "
                              "If it failed again, that failure is a new dead letter: replay that one")


def replay_letter(session: Session, letter_id: int, operator: str) -> DeadLetter:
    """Queue the letter's payload to its original topic and mark it replayed (steps 1-4 above;
    the caller's transaction commits both or neither)."""
    letter = get_letter(session, letter_id, for_update=True)
    if letter.replayed_at is not None:
        raise already_replayed(letter)
    add_raw_to_outbox(session, letter.topic, letter.key, letter.payload, entry_id=replay_entry_id(letter.id),
                      publisher=REPLAY_PUBLISHER)
    letter.replayed_at = datetime.now(UTC)
    letter.replayed_by = operator
    restore_file(session, letter, operator)
    return letter


def restore_file(session: Session, letter: DeadLetter, operator: str) -> None:
    """A file this letter failed goes back to where it was, so the replayed message finds it
    there (a parser ignores a failed file). A file that moved on since (retried, or failed
    by another letter) is left alone."""
    if letter.file_id is None or letter.file_status is None:
        return
    file = session.get(File, letter.file_id, with_for_update=True)
    if file is None or file.status != "failed" or letter_mark(letter.id) not in (file.status_reason or ""):
        return
    file.status, file.updated_at = letter.file_status, datetime.now(UTC)
    file.status_reason = f"dead letter {letter.id} replayed by {operator}"


def dlq_routes(runtime: Runtime, *, on_queued: Callable[[], None] | None = None) -> list[Route]:
    """``on_queued`` is called after a replay commits (the admin relay's ``wake``), so the
    replay goes out at once rather than at the relay's next round."""

    def list_endpoint(request: Request) -> Response:
        with runtime.database.transaction() as session:
            return JSONResponse(list_letters(session, request.query_params.get("service")))

    def show_endpoint(request: Request) -> Response:
        letter_id = letter_id_of(request.path_params["letter_id"])
        with runtime.database.transaction() as session:
            return JSONResponse(letter_view(get_letter(session, letter_id)))

    async def replay_endpoint(request: Request) -> Response:
        letter_id = letter_id_of(request.path_params["letter_id"])
        try:
            body = await request.json() if await request.body() else {}
        except ValueError as exc:  # not JSON, or not UTF-8
            raise InputError(f"the request body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise InputError("the body of a replay is a JSON object such as {\"reason\": \"...\"}")
        reason = str(body.get("reason") or "").strip()
        operator = request.headers.get("x-operator", "operator")

        def replay() -> dict[str, Any]:
            try:
                with runtime.database.transaction() as session:
                    letter = replay_letter(session, letter_id, operator)
                    audit_request(session, request, "dead-letter.replay", str(letter_id), reason or None)
                    reply = {"id": letter.id, "replayed": True, "topic": letter.topic, "service": letter.service,
                             "replayed_at": _iso(letter.replayed_at), "replayed_by": letter.replayed_by}
            except IntegrityError:
                # Another replay of this letter committed first (the outbox entry id is taken).
                with runtime.database.transaction() as session:
                    raise already_replayed(get_letter(session, letter_id)) from None
            log.info("dead_letter_replayed", dead_letter=letter_id, service=reply["service"], topic=reply["topic"],
                     operator=operator, reason=reason)
            return reply

        reply = await run_in_threadpool(replay)
        if on_queued is not None:
            on_queued()
        return JSONResponse(reply, status_code=202)

    return [
        Route("/dead-letters", list_endpoint, methods=["GET"]),
        Route("/dead-letters/{letter_id}", show_endpoint, methods=["GET"]),
        Route("/dead-letters/{letter_id}/replay", replay_endpoint, methods=["POST"]),
    ]
