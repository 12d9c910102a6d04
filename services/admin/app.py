"""The operator HTTP API (Starlette). Every action an operator takes becomes an event;
the API never changes pipeline state behind the services' backs.

Replies are true whatever the broker does: an upload, a billing run or a file command is
written to the transactional outbox in one database transaction, so once the API answers
``202 Accepted`` its event is sure to follow (the relay publishes it, after a broker outage
or a restart of this process too). The reply says whether the broker has it already
(``announced``); a request refused (422, 404, 409) did nothing at all."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cdrflow.bus import Topic, topic_name
from cdrflow.bus.outbox import OutboxRelay, RelayThread, add_to_outbox
from cdrflow.errors import CdrflowError, InfrastructureError, InputError
from cdrflow.events import Event
from cdrflow.filestore import StoredFile
from cdrflow.intake import FileMetadata, file_arrived, safe_name
from cdrflow.log import get_logger
from cdrflow.runtime import Runtime
from services.admin.delivery_api import delivery_routes
from services.admin.billing_api import billing_routes
from services.admin.calls_api import calls_routes
from services.admin.dlq_api import dlq_routes
from services.admin.files_api import files_routes
from services.admin.fees_api import fee_routes
from services.admin.formats_api import format_routes
from services.admin.invoices_api import invoices_routes
from services.admin.reference_api import reference_routes

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

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        relay.start()
        try:
            yield
        finally:
            relay.stop(timeout=1)

    def publish(topic: Topic, key: str, event: Event) -> bool:
        """Queue the event in the outbox (committed: it will be published), then wait a little
        for the broker's acknowledgement. Returns whether the broker has it already."""
        with runtime.database.transaction() as session:
            add_to_outbox(session, topic_name(ns, topic), key, event, publisher="admin")
        return relay.wait_published(event.id, ANNOUNCE_WAIT_S)

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    def check(meta: FileMetadata) -> None:
        with runtime.database.transaction() as session:
            meta.check(session)

    async def announce_upload(stored: StoredFile, meta: FileMetadata, uploaded_name: str) -> Response:
        event = file_arrived(stored, meta, runtime.source, {"uploaded_name": uploaded_name})
        announced = await run_in_threadpool(publish, Topic.FILE_ARRIVED, stored.fingerprint, event)
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
        return await announce_upload(stored, meta, q["name"])

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
        return await announce_upload(stored, meta, name)

    async def on_http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, str(exc.detail))

    async def on_cdrflow_error(_: Request, exc: Exception) -> Response:
        if isinstance(exc, InputError):
            return _error(422, str(exc))
        if isinstance(exc, InfrastructureError):
            log.error("admin_unavailable", error=str(exc))
            return _error(503, f"try again later: {exc}")
        return _error(500, str(exc))

    return Starlette(
        lifespan=lifespan,
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
            *fee_routes(runtime),
            *format_routes(runtime),
        ],
        exception_handlers={HTTPException: on_http_error, CdrflowError: on_cdrflow_error},
    )
