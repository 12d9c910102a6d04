"""Starting the whole pipeline on one machine: broker (unless external), topics, database,
then every service as its own process; stopping all of it again."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from collections.abc import Iterator
from pathlib import Path

from cdrflow.bus import provision_topics
from cdrflow.client import AdminClient
from cdrflow.db import migrate
from cdrflow.errors import InfrastructureError
from cdrflow.localkafka import LocalKafka
from cdrflow.log import get_logger
from cdrflow.settings import Settings
from cdrflow_app.up_summary import Infrastructure, describe_broker, describe_database, exited_report

log = get_logger(__name__)

PIPELINE_SERVICES = ("dedupe", "parser", "rater", "invoicer", "sender", "admin", "collector", "mailgate", "scheduler")
"""What ``cdrflow up`` runs, each as its own process. The collector idles until sources exist;
the mail gateway listens on ``mailgate_host:mailgate_port``."""


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as CDRFLOW_* variables, so a child process reads exactly the same settings."""
    env = {}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"CDRFLOW_{name.upper()}"] = str(value.resolve()) if name == "data_dir" else str(value)
    return env


@contextmanager
def infrastructure(settings: Settings) -> Iterator[Infrastructure]:
    """Broker up (started here if local and not running; stopped again if we started it),
    topics provisioned, database migrated."""
    broker = None
    if settings.uses_local_broker:
        local = LocalKafka(settings.local_kafka_home.resolve(), port=settings.kafka_port)
        if not local.status().running:
            log.info("starting_local_broker", bootstrap=local.bootstrap)
            local.start()
            broker = local
    try:
        provision_topics(settings.bootstrap, settings.namespace)
        migrate(settings.effective_database_url)
        yield Infrastructure(describe_broker(settings, broker is not None), describe_database(settings))
    finally:
        if broker is not None:
            broker.stop()


def spawn_service(service: str, settings: Settings, log_dir: str | None = None) -> subprocess.Popen[bytes]:
    env = os.environ | settings_env(settings)
    out = open(os.path.join(log_dir, f"{service}.log"), "ab") if log_dir else None  # noqa: SIM115
    return subprocess.Popen([sys.executable, "-m", "cdrflow_app", "run", service], env=env,
                            stdout=out, stderr=subprocess.STDOUT if out else None)


def stop_processes(procs: dict[str, subprocess.Popen[bytes]], timeout: float = 20) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs.values():
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def pipeline(settings: Settings, log_dir: str | None = None,
             services: tuple[str, ...] = PIPELINE_SERVICES) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """Every service running as its own process; the admin API answering before we yield."""
    procs = {name: spawn_service(name, settings, log_dir) for name in services}
    try:
        if "admin" in services:
            wait_for_admin(settings, procs, log_dir=log_dir)
        yield procs
    finally:
        stop_processes(procs)


def wait_for_listener(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float = 15) -> bool:
    """Whether a service's TCP port accepts connections within ``timeout`` (False at once if the
    process exited). A wildcard listen address is tried on the loopback."""
    target = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection((target, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.2)
    return False


def wait_for_admin(settings: Settings, procs: dict[str, subprocess.Popen[bytes]], timeout: float = 60,
                   log_dir: str | None = None) -> None:
    client = AdminClient.for_settings(settings)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.health():
            return
        dead = [n for n, p in procs.items() if p.poll() is not None]
        if dead:
            raise InfrastructureError(exited_report(procs, dead, Path(log_dir) if log_dir else None, at_start_up=True))
        time.sleep(0.2)
    raise InfrastructureError(f"admin API did not answer at {settings.admin_url} within {timeout}s")
