"""Structured logs: one JSON event per line on stderr, carrying file and call ids; never secrets."""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(level: str = "INFO", service: str | None = None) -> None:
    logging.basicConfig(stream=sys.stderr, level=level.upper(), format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        # Not cached: a cached logger stays pinned to the configuration it first met (a later
        # configure, or structlog.testing.capture_logs, would not reach it), and services log per
        # batch or file, never per row, so the lookup costs nothing measurable.
        cache_logger_on_first_use=False,
    )
    if service:
        structlog.contextvars.bind_contextvars(service=service)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
