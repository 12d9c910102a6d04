"""Runs the operator API under uvicorn on the configured host and port."""

from __future__ import annotations

import uvicorn

from cdrflow.runtime import Runtime
from services.admin.app import create_app


def serve(runtime: Runtime) -> None:
    s = runtime.settings
    uvicorn.run(create_app(runtime), host=s.admin_host, port=s.admin_port, log_level="warning",
                access_log=False, timeout_graceful_shutdown=5)
