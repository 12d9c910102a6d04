"""A stop that can't hang: after SIGTERM a service has ``STOP_GRACE_S`` to finish cleanly, then
the process exits at once.

Safe by the delivery guarantee: nothing is acknowledged (offset stored, 250 sent, 202 answered)
before it is committed, so whatever was cut short is repeated after the restart. Without it a
service told to stop while the broker is down would wait out the Kafka client's timeouts."""

from __future__ import annotations

import os
import threading
import time

from cdrflow.log import get_logger

log = get_logger(__name__)

STOP_GRACE_S = 5.0
_armed = threading.Event()


def exit_if_not_stopped_in(seconds: float = STOP_GRACE_S) -> None:
    """Arm (once) a watchdog that ends the process ``seconds`` from now."""
    if _armed.is_set():
        return
    _armed.set()

    def watchdog() -> None:
        time.sleep(seconds)
        log.warning("service_stop_forced", after_s=seconds)
        os._exit(0)

    threading.Thread(target=watchdog, name="stop-watchdog", daemon=True).start()
