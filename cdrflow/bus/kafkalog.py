"""The Kafka client's own log lines and errors, routed through the project's JSON logger.

librdkafka reports every failed reconnect while a broker is down; left alone that is
hundreds of non-JSON lines on stderr. Here each line becomes one structured event
(``kafka_client_log``, with the client id and the service bound by ``configure_logging``),
and a line repeating within ``REPEAT_WINDOW_S`` is counted instead of printed again.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

from cdrflow.log import get_logger

log = get_logger(__name__)

REPEAT_WINDOW_S = 60.0
_DIGITS = re.compile(r"\d+")


class _RepeatFilter(logging.Filter):
    """Lets a message through once per window; the next one after the window says how many were held back."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        shape = _DIGITS.sub("#", record.getMessage())
        now = time.monotonic()
        with self._lock:
            last, held = self._seen.get(shape, (0.0, 0))
            if now - last < REPEAT_WINDOW_S:
                self._seen[shape] = (last, held + 1)
                return False
            self._seen[shape] = (now, 0)
        record.repeats_suppressed = held
        return True


class _ToStructlog(logging.Handler):
    def __init__(self, client_id: str) -> None:
        super().__init__()
        self.client_id = client_id

    def emit(self, record: logging.LogRecord) -> None:
        level = "warning" if record.levelno >= logging.WARNING else "info" if record.levelno >= logging.INFO else "debug"
        getattr(log, level)("kafka_client_log", client=self.client_id, message=record.getMessage(),
                            repeats_suppressed=getattr(record, "repeats_suppressed", 0))


_errors = _RepeatFilter()


def _on_error(client_id: str) -> Any:
    def report(err: Any) -> None:
        record = logging.LogRecord("kafka", logging.WARNING, "", 0, err.str(), None, None)
        if _errors.filter(record):
            log.warning("kafka_client_error", client=client_id, error=err.str(), fatal=err.fatal(),
                        repeats_suppressed=record.repeats_suppressed)

    return report


def client_logging(client_id: str) -> dict[str, Any]:
    """Config entries that send a client's log lines and errors to the JSON logger."""
    logger = logging.getLogger(f"cdrflow.kafka.{client_id}")
    if not logger.handlers:
        logger.addHandler(_ToStructlog(client_id))
        logger.addFilter(_RepeatFilter())
        logger.propagate = False
        logger.setLevel(logging.INFO)
    return {"logger": logger, "error_cb": _on_error(client_id)}
