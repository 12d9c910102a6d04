"""``GET /audit``: the audit trail (who changed what, when, why), newest first; for operators and
admins. ``since`` is a day (local, in the operator's zone) or an ISO time; ``limit`` caps the rows."""

from __future__ import annotations

from datetime import date, datetime, time

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cdrflow.runtime import Runtime
from services.admin.accounts import audit_json, audit_since
from services.admin.auth import require_role

MAX_ROWS = 10_000


def parse_since(text: str, zone) -> datetime:  # type: ignore[no-untyped-def]
    """A day (``2025-03-01``: from local midnight) or an ISO time (a naive one is local)."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), tzinfo=zone)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"since={text!r} is neither a day (YYYY-MM-DD) nor an ISO time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


def audit_routes(runtime: Runtime) -> list[Route]:
    async def list_audit(request: Request) -> Response:
        require_role(request, "operator", "read the audit trail")
        q = request.query_params
        try:
            since = parse_since(q["since"], runtime.settings.zone) if q.get("since") else None
            limit = int(q.get("limit") or MAX_ROWS)
        except ValueError as exc:
            raise HTTPException(400, str(exc) if "since" in str(exc) else "limit must be a whole number") from exc
        if not 1 <= limit <= MAX_ROWS:
            raise HTTPException(400, f"limit must be between 1 and {MAX_ROWS}")

        def read() -> list[dict]:  # type: ignore[type-arg]
            with runtime.database.transaction() as session:
                return [audit_json(row) for row in audit_since(session, since, limit)]

        return JSONResponse(await run_in_threadpool(read))

    return [Route("/audit", list_audit, methods=["GET"])]
