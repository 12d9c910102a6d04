"""What ``cdrflow up`` tells a person at a terminal: what started, where it listens, where the
logs are; and, when a service dies, the end of its log.

In a terminal each service's JSON log goes to ``<data_dir>/logs/<service>.log`` and the screen
keeps this short summary; with ``--json-logs``, or when stdout is not a terminal (a container,
a pipe, a supervisor), the services write their JSON logs to the inherited stderr as before.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from sqlalchemy.engine import make_url

from cdrflow.settings import Settings

LAST_LINE_CHARS = 800
"""How much of a dead service's last log line ``cdrflow up`` shows."""


@dataclass(frozen=True)
class Infrastructure:
    """What ``cdrflow up`` runs on, as the summary shows it."""

    broker: str
    database: str


def logs_dir(settings: Settings) -> Path:
    return settings.data_dir / "logs"


def service_log(log_dir: Path, service: str) -> Path:
    return log_dir / f"{service}.log"


def wants_json_logs(json_logs: bool, stdout: TextIO) -> bool:
    """JSON logs on the inherited stderr when asked, or when nobody reads stdout as a terminal."""
    try:
        return json_logs or not stdout.isatty()
    except (AttributeError, ValueError):  # closed or not a real stream
        return True


def describe_broker(settings: Settings, started_here: bool) -> str:
    if not settings.uses_local_broker:
        return f"Kafka cluster {settings.bootstrap} (CDRFLOW_KAFKA_BOOTSTRAP)"
    how = "started now, stopped with cdrflow up" if started_here else "already running, left running"
    return f"local broker {settings.bootstrap} ({how})"


def describe_database(settings: Settings) -> str:
    """The database URL without its password."""
    return make_url(settings.effective_database_url).render_as_string(hide_password=True)


def _shown(path: Path) -> str:
    """A path as the operator would type it: relative to the working directory when under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path.resolve())


def up_summary(settings: Settings, procs: Mapping[str, subprocess.Popen[bytes]], infra: Infrastructure,
               log_dir: Path, mailgate_listening: bool = True) -> str:
    """The lines ``cdrflow up`` prints once every service is started (admin API answering)."""
    width = max(len(name) for name in procs)
    lines = [f"cdrflow up: {len(procs)} service(s) running; Ctrl-C stops them all"]
    lines += [f"  {name:<{width}}  pid {proc.pid}" for name, proc in procs.items()]
    lines.append("")
    if "admin" in procs:
        lines.append(f"  admin API     {settings.admin_url}  (the cdrflow commands talk to it)")
    if "mailgate" in procs:
        state = "" if mailgate_listening else ", not answering yet: see its log"
        tls = "STARTTLS offered" if settings.mailgate_tls_cert else "no STARTTLS"
        lines.append(f"  mail gateway  smtp://{settings.mailgate_host}:{settings.mailgate_port}  (cdrs@"
                     f"{settings.mail_domain}, <carrier>.cdrs@{settings.mail_domain}; {tls}{state})")
    lines.append(f"  broker        {infra.broker}")
    lines.append(f"  database      {infra.database}")
    example = service_log(log_dir, "collector" if "collector" in procs else next(iter(procs)))
    lines.append(f"  logs          {_shown(log_dir)}{os.sep}<service>.log  (JSON, one event per line; "
                 f"e.g. tail -f {_shown(example)})")
    return "\n".join(lines)


def last_log_line(path: Path) -> str | None:
    """The last non-empty line of a log file (read from its end: logs grow), or None."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16 * 1024))
            lines = [line for line in fh.read().splitlines() if line.strip()]
    except OSError:
        return None
    if not lines:
        return None
    text = lines[-1].decode("utf-8", "replace")
    return text if len(text) <= LAST_LINE_CHARS else text[:LAST_LINE_CHARS] + "…"


def exited_report(procs: Mapping[str, subprocess.Popen[bytes]], dead: list[str], log_dir: Path | None,
                  at_start_up: bool = False) -> str:
    """Why ``cdrflow up`` stops: which services exited, with what status, and the end of each one's
    log (or, with JSON logs on stderr, a pointer to them)."""
    when = " at start-up" if at_start_up else ""
    lines = [f"service(s) exited{when}: {', '.join(f'{n} (exit status {procs[n].returncode})' for n in dead)}; "
             "the other services are stopped"]
    for name in dead:
        if log_dir is None:
            lines.append(f"  {name}: see its JSON log lines above (service={name})")
            continue
        path = service_log(log_dir, name)
        last = last_log_line(path)
        lines.append(f"  {name}: {_shown(path)} ends: {last}" if last else f"  {name}: {_shown(path)} is empty")
    return "\n".join(lines)
