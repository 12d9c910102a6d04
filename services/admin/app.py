"""The operator HTTP API (Starlette). Every action an operator takes becomes an event;
the API never changes pipeline state behind the services' backs.

Replies are true whatever the broker does: an upload, a billing run or a file command is
written to the transactional outbox in one database transaction, so once the API answers
``202 Accepted`` its event is sure to follow (the relay publishes it, after a broker outage
or a restart of this process too). The reply says whether the broker has it already
(``announced``); a request refused (422, 404, 409) did nothing at all."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from sqlalchemy.orm import Session
from sqlalchemy.exc import DataError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cdrflow.bus import Topic, topic_name
from cdrflow.bus.outbox import OutboxRelay, RelayThread, add_to_outbox
from cdrflow.errors import CdrflowError, ConfigurationError, InfrastructureError, InputError
from cdrflow.events import Event
from cdrflow.filestore import StoredFile
from cdrflow.intake import FileMetadata, file_arrived, safe_name
from cdrflow.log import get_logger
from cdrflow.runtime import Runtime
from services.admin.accounts import ensure_admin_token
from services.admin.audit_api import audit_routes
from services.admin.auth import audit_request, auth_middleware
from services.admin.delivery_api import delivery_routes
from services.admin.billing_api import billing_routes
from services.admin.console import console_routes
from services.admin.calls_api import calls_routes
from services.admin.dlq_api import dlq_routes
from services.admin.files_api import files_routes
from services.admin.fees_api import fee_routes
from services.admin.formats_api import format_routes
from services.admin.invoices_api import invoices_routes
from services.admin.reference_api import reference_routes
from services.admin.openapi import openapi_route
from services.admin.reference_views_api import reference_view_routes
from services.admin.sources_api import sources_routes

log = get_logger(__name__)

UPLOAD_FIELDS = ("carrier", "kind", "period", "direction")
"""What an uploaded file must be told: these are never guessed for uploads."""

ANNOUNCE_WAIT_S = 5.0
"""How long a request waits for the broker to acknowledge its event before answering
``announced: false`` (the event is in the outbox all the same, and goes out when it can)."""

QUEUED = "the broker is not reachable: it is stored and will go on by itself when the broker is back"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(runtime: Runtime) -> Starlette:
    ns = runtime.settings.namespace
    relay = RelayThread(OutboxRelay(runtime.database, lambda: runtime.producer, publisher="admin"))
    ensure_admin_token(runtime.database, runtime.settings.data_dir)  # the CLI on this machine acts through it

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        relay.start()
        try:
            yield
        finally:
            relay.stop(timeout=1)

    def publish(topic: Topic, key: str, event: Event, audited: Callable[[Session], None] | None = None) -> bool:
        """Queue the event in the outbox (committed: it will be published), then wait a little
        for the broker's acknowledgement. Returns whether the broker has it already. ``audited``
        writes the audit row in the same transaction as the event."""
        with runtime.database.transaction() as session:
            add_to_outbox(session, topic_name(ns, topic), key, event, publisher="admin")
            if audited is not None:
                audited(session)
        return relay.wait_published(event.id, ANNOUNCE_WAIT_S)

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    def check(meta: FileMetadata) -> None:
        with runtime.database.transaction() as session:
            meta.check(session)

    async def announce_upload(request: Request, stored: StoredFile, meta: FileMetadata, uploaded_name: str) -> Response:
        event = file_arrived(stored, meta, runtime.source, {"uploaded_name": uploaded_name})
        detail = {"carrier": meta.carrier, "kind": meta.kind, "period": meta.period, "direction": meta.direction,
                  "name": meta.original_name, "fingerprint": stored.fingerprint, "size": stored.size}
        announced = await run_in_threadpool(publish, Topic.FILE_ARRIVED, stored.fingerprint, event, lambda session:
                                            audit_request(session, request, "file.upload", event.data["file_id"],
                                                          None, detail))
        log.info("file_uploaded", file_id=event.data["file_id"], fingerprint=stored.fingerprint,
                 size=stored.size, carrier=meta.carrier, original_name=meta.original_name, announced=announced)
        return JSONResponse({"file_id": event.data["file_id"], "fingerprint": stored.fingerprint,
                             "size": stored.size, "announced": announced,
                             "message": "file received" if announced else f"file received; {QUEUED}"},
                            status_code=202)

    async def upload(request: Request) -> Response:
        """``POST /files``: a multipart form (fields carrier, kind, period, direction and a ``file``
        part, as a browser sends it), or the raw bytes as the body with those fields as query
        parameters plus ``name``. Metadata is checked before anything is stored, so a refused
        upload stores nothing and announces nothing. Memory stays flat however large the file:
        a multipart file part is spooled to a temporary file (in memory up to 1 MB only) and
        copied into the store in chunks; a raw body goes into the store chunk by chunk."""
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            return await upload_form(request)
        q = request.query_params
        missing = [k for k in ("carrier", "kind", "direction", "name") if not q.get(k)]
        if missing:
            return _error(400, f"missing query parameter(s): {', '.join(missing)}")
        meta = FileMetadata(carrier=q["carrier"], kind=q["kind"], period=q.get("period", "daily"),
                            direction=q["direction"], original_name=safe_name(q["name"]), channel="upload")
        await run_in_threadpool(check, meta)
        stored = await runtime.store.put_async_chunks(request.stream())
        return await announce_upload(request, stored, meta, q["name"])

    async def upload_form(request: Request) -> Response:
        async with request.form(max_files=1, max_fields=len(UPLOAD_FIELDS) + 1) as form:
            part = form.get("file")
            if not isinstance(part, UploadFile):
                return _error(400, "a multipart upload needs its file in a part named 'file'")
            missing = [k for k in UPLOAD_FIELDS if not isinstance(form.get(k), str) or not form.get(k)]
            if missing:
                return _error(400, f"missing form field(s): {', '.join(missing)}")
            name = str(form.get("name") or part.filename or "upload")
            meta = FileMetadata(carrier=str(form["carrier"]), kind=str(form["kind"]), period=str(form["period"]),
                                direction=str(form["direction"]), original_name=safe_name(name), channel="upload")
            await run_in_threadpool(check, meta)
            stored = await run_in_threadpool(runtime.store.put_stream, part.file)
        return await announce_upload(request, stored, meta, name)

    async def on_http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, str(exc.detail))

    async def on_cdrflow_error(_: Request, exc: Exception) -> Response:
        if isinstance(exc, InputError):
            return _error(422, str(exc))
        if isinstance(exc, InfrastructureError):
            log.error("admin_unavailable", error=str(exc))
            return _error(503, f"try again later: {exc}")
        if isinstance(exc, ConfigurationError):  # e.g. no seller name: nothing can be rendered until set
            return _error(503, f"cdrflow is not configured for this: {exc}")
        return _error(500, str(exc))

    async def on_data_error(_: Request, exc: Exception) -> Response:
        """A value the database can't store or compare (a NUL character, a number out of range):
        bad input, refused, not a server error."""
        why = str(getattr(exc, "orig", exc)).splitlines()[0]
        return _error(422, f"a value given can't be stored or looked up: {why}")

    return Starlette(
        lifespan=lifespan,
        middleware=auth_middleware(runtime.settings, runtime.database),
        routes=[
            Route("/health", health),
            Route("/files", upload, methods=["POST"]),
            *files_routes(runtime, publish),
            *dlq_routes(runtime, on_queued=relay.wake),
            *billing_routes(runtime, lambda entry: relay.wait_published(entry, ANNOUNCE_WAIT_S), QUEUED),
            *invoices_routes(runtime, publish),
            *calls_routes(runtime),
            *delivery_routes(runtime),
            *reference_routes(runtime),
            *reference_view_routes(runtime),
            *sources_routes(runtime),
            openapi_route(),
            *fee_routes(runtime),
            *format_routes(runtime),
            *audit_routes(runtime),
            *console_routes(runtime, publish),
        ],
        exception_handlers={HTTPException: on_http_error, CdrflowError: on_cdrflow_error, DataError: on_data_error},
    )
