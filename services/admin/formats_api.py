"""File formats over HTTP.

- ``GET /formats``: built-in and custom formats; ``GET /formats/{name}``: one, with its TOML;
- ``POST /formats`` (body: the TOML definition, ``text/plain`` or ``application/toml``): save a
  custom format; a mistake is refused whole (HTTP 422) with the key it is about;
- ``DELETE /formats/{name}``: remove a custom format no carrier uses;
- ``PUT /carriers/{carrier}/formats/{kind}`` (JSON ``format``, optional ``zone``,
  ``max_reject_share``): which format reads a carrier's CDR or SDR files.

A file's rejected rows are shown with the file (``GET /files/{id}``, services/admin/files_api.py).

The same library calls as ``cdrflow formats`` (``services.parser.custom``).
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cdrflow.errors import InputError
from cdrflow.runtime import Runtime
from services.admin.auth import audit_request
from services.parser.custom import (
    custom_format_source, list_formats, remove_format, save_format, set_carrier_format,
)
from services.parser.registry import builtin_formats

MAX_DEFINITION_BYTES = 1_000_000
def format_routes(runtime: Runtime) -> list[Route]:
    def formats(_: Request) -> Response:
        with runtime.database.transaction() as session:
            return JSONResponse([{"name": f.name, "kind": f.kind, "origin": f.origin, "description": f.description}
                                 for f in list_formats(session)])

    def show_format(request: Request) -> Response:
        name = request.path_params["name"]
        builtin = builtin_formats().get(name)
        if builtin is not None:
            return JSONResponse({"name": name, "kind": builtin.kind, "origin": "built-in", "source": builtin.source})
        with runtime.database.transaction() as session:
            source = custom_format_source(session, name)
        if source is None:
            raise HTTPException(404, f"no format {name!r}")
        return JSONResponse({"name": name, "origin": "custom", "source": source})

    async def add_format(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_DEFINITION_BYTES:
            raise InputError(f"a format definition is at most {MAX_DEFINITION_BYTES} bytes")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"a format definition must be UTF-8 TOML text ({exc})") from exc

        def save() -> dict[str, Any]:
            with runtime.database.transaction() as session:
                definition, version = save_format(session, text, origin="definition")
                audit_request(session, request, "format.save", definition.name, None, {"version": version})
            return {"name": definition.name, "kind": definition.kind, "version": version}

        return JSONResponse(await run_in_threadpool(save), status_code=201)

    def delete_format(request: Request) -> Response:
        with runtime.database.transaction() as session:
            remove_format(session, request.path_params["name"])
            audit_request(session, request, "format.remove", request.path_params["name"])
        return Response(status_code=204)

    async def use_format(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError as exc:
            raise InputError(f"the request body is not JSON: {exc}") from exc
        if not isinstance(body, dict) or not isinstance(body.get("format"), str):
            raise InputError("the request body must be a JSON object with 'format' (and optional 'zone', "
                             "'max_reject_share')")
        carrier, kind = request.path_params["carrier"], request.path_params["kind"]
        share = body.get("max_reject_share")
        if share is not None and (isinstance(share, bool) or not isinstance(share, (int, float))):
            raise InputError("max_reject_share must be a number from 0 to 1")

        def save() -> dict[str, Any]:
            with runtime.database.transaction() as session:
                s = set_carrier_format(session, carrier, kind, body["format"], zone=body.get("zone"),
                                       max_reject_share=None if share is None else float(share))
                audit_request(session, request, "carrier.format", f"{carrier} {kind}", None, {"format": s.format})
                return {"carrier": s.carrier, "kind": s.kind, "format": s.format, "zone": s.zone,
                        "max_reject_share": s.max_reject_share}

        return JSONResponse(await run_in_threadpool(save))

    return [
        Route("/formats", formats, methods=["GET"]),
        Route("/formats", add_format, methods=["POST"]),
        Route("/formats/{name}", show_format, methods=["GET"]),
        Route("/formats/{name}", delete_format, methods=["DELETE"]),
        Route("/carriers/{carrier}/formats/{kind}", use_format, methods=["PUT"]),
    ]
