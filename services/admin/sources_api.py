"""The collector's sources over HTTP, read only: ``GET /sources`` and ``GET /sources/{name}``.

A source is configured with ``cdrflow sources add`` (its credentials are typed at a terminal
and encrypted with CDRFLOW_SECRET_KEY), so the API only shows what a source is and how its
polls are going; it never shows a password, a private key or the encrypted secret.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cdrflow.db.models import Source
from cdrflow.runtime import Runtime
from services.collector.sources import all_sources


def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def source_view(src: Source) -> dict[str, Any]:
    """A source as the API and ``cdrflow sources list|show --json`` give it: where it is, what it
    collects, and the state of its last poll (``state``: new, ok, failing or disabled)."""
    return {
        "source": src.name, "carrier": src.carrier, "protocol": src.protocol, "host": src.host, "port": src.port,
        "username": src.username, "remote_dir": src.remote_dir, "rules": orjson.loads(src.rules),
        "poll_interval": src.poll_interval, "delete_after_collect": src.delete_after_collect,
        "verify_tls": src.verify_tls, "tls_ca": bool(src.tls_ca), "host_key_pinned": src.host_key is not None,
        "enabled": src.enabled, "state": src.state if src.enabled else "disabled", "failures": src.failures,
        "collected": src.collected, "last_error": src.last_error, "last_poll_at": _when(src.last_poll_at),
        "last_success_at": _when(src.last_success_at), "next_poll_at": _when(src.next_poll_at),
        "warnings": warnings(src),
    }


def warnings(src: Source) -> list[str]:
    """What an operator should know about how safely the source is reached."""
    found = []
    if src.protocol == "sftp" and src.host_key is None:
        found.append("host key NOT pinned")
    if src.protocol == "ftps" and not src.verify_tls:
        found.append("TLS NOT verified")
    elif src.protocol == "ftps" and src.tls_ca:
        found.append("TLS verified against its own CA")
    return found


def sources_routes(runtime: Runtime) -> list[Route]:
    database = runtime.database

    def list_sources(request: Request) -> Response:
        """Every source, by name; ``carrier`` filters to one carrier's."""
        carrier = request.query_params.get("carrier")
        with database.transaction() as session:
            return JSONResponse([source_view(s) for s in all_sources(session) if not carrier or s.carrier == carrier])

    def show_source(request: Request) -> Response:
        """One source and the state of its polls."""
        name = request.path_params["name"]
        with database.transaction() as session:
            src = session.get(Source, name)
            if src is None:
                raise HTTPException(404, f"no source {name!r}: see 'cdrflow sources list'")
            return JSONResponse(source_view(src))

    return [
        Route("/sources", list_sources, methods=["GET"]),
        Route("/sources/{name}", show_source, methods=["GET"]),
    ]
