"""A real single-node KRaft Kafka broker that cdrflow installs and runs itself.

Development, tests and ``cdrflow demo``/``up`` need a real broker and there is no
Docker: Maven fetches ``org.apache.kafka:kafka_2.13`` and its runtime jars
(deploy/kafka/pom.xml), and ``kafka.Kafka`` runs on the local JVM on 127.0.0.1.
Each broker owns a *home* dir (config, KRaft data, pid, logs), so tests run
throw-away brokers beside a developer's long-lived one.
"""

from __future__ import annotations

import base64
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from cdrflow.errors import BrokerError, ConfigurationError

KAFKA_VERSION: str = "4.4.0"  # keep equal to <kafka.version> in deploy/kafka/pom.xml
_DEPLOY_DIR = Path(__file__).resolve().parent.parent / "deploy" / "kafka"
_JVM_OPTS = ["-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-Djava.awt.headless=true"]
# Brokers spawned by this process, kept so they get reaped (no zombies, no ResourceWarning).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def libs_dir() -> Path:
    """Broker jars, shared by all broker homes. ``CDRFLOW_KAFKA_LIBS`` overrides it
    (CI caches); the only env var this module reads, everything else is passed in."""
    override = os.environ.get("CDRFLOW_KAFKA_LIBS")
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "cdrflow" / f"kafka-{KAFKA_VERSION}" / "libs"


def _tool(name: str) -> str:
    """Path of a required executable; a missing one is the operator's to install."""
    found = shutil.which(name)
    if found is None:
        raise ConfigurationError(
            f"'{name}' not found on PATH: the local Kafka broker needs Java 17+ and Maven "
            "(Debian: apt-get install openjdk-17-jre-headless maven)")
    return found


def _tail_text(text: str, lines: int = 25) -> str:
    """Last lines of a tool's output, minus the colour codes Maven emits even in batch mode."""
    return "\n".join(re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines()[-lines:])


@contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    """Serialise installs/starts across processes (e.g. parallel test workers)."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def ensure_installed() -> Path:
    """Fetch the broker jars once. Maven fills a temp sibling dir renamed into place
    only when complete: an interrupted fetch never leaves a half-filled libs dir."""
    libs = libs_dir()
    jar = libs / f"kafka_2.13-{KAFKA_VERSION}.jar"
    if jar.is_file():
        return libs
    _tool("java")
    mvn, pom = _tool("mvn"), _DEPLOY_DIR / "pom.xml"
    if not pom.is_file():
        raise ConfigurationError(f"{pom} is missing: run cdrflow from its source checkout")
    with _locked(libs.parent / ".install.lock"):
        if jar.is_file():  # another process installed it while we waited
            return libs
        tmp = Path(tempfile.mkdtemp(prefix=".libs-", dir=libs.parent))
        try:
            cmd = [mvn, "-B", "-q", "-f", str(pom),
                   "dependency:copy-dependencies", f"-DoutputDirectory={tmp}",
                   "-DincludeScope=runtime", f"-Dkafka.version={KAFKA_VERSION}"]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
            except subprocess.TimeoutExpired as exc:
                raise BrokerError("fetching Kafka with Maven took over 30 minutes") from exc
            if done.returncode != 0 or not (tmp / jar.name).is_file():
                raise BrokerError(f"fetching Kafka {KAFKA_VERSION} with Maven failed:\n"
                                  + _tail_text(done.stdout + done.stderr))
            if libs.exists():  # a stale libs dir without the jar
                shutil.rmtree(libs)
            tmp.chmod(0o755)  # mkdtemp makes it private; the jars are not secret
            os.rename(tmp, libs)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return libs


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class BrokerStatus:
    """What ``cdrflow kafka status`` reports."""

    running: bool
    pid: int | None
    bootstrap: str
    detail: str


@dataclass(frozen=True)
class LocalKafka:
    """One local broker+controller (KRaft combined mode) rooted at ``home``."""

    home: Path
    port: int = 9092
    controller_port: int = 0  # 0: pick a free port on first start, remembered in home

    def __post_init__(self) -> None:
        # Absolute, because the JVM runs with cwd=home and we match its command line.
        object.__setattr__(self, "home", Path(self.home).expanduser().resolve())

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def _config(self) -> Path:  # its path also identifies our JVM in /proc/<pid>/cmdline
        return self.home / "server.properties"

    def _pid(self) -> int | None:
        """Pid of *this home's* live broker; the cmdline check guards against reused pids."""
        try:
            pid = int((self.home / "broker.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        if pid in _CHILDREN:
            # Our own child: its handle knows. (Its /proc cmdline is empty for the first
            # milliseconds after exec, which would read as "not running".)
            return pid if _CHILDREN[pid].poll() is None else None
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return None
        return None if state == "Z" or str(self._config) not in cmdline else pid

    def status(self) -> BrokerStatus:
        pid = self._pid()
        if pid is None:
            return BrokerStatus(False, None, self.bootstrap, f"not running (home {self.home})")
        if not _port_answers(self.port):
            return BrokerStatus(False, pid, self.bootstrap,
                                f"process {pid} alive but {self.bootstrap} not answering")
        return BrokerStatus(True, pid, self.bootstrap, f"running, pid {pid}, {self.bootstrap}")

    def _cport(self) -> int:
        """Controller port: given, or chosen once and reused (it is in the KRaft voter set)."""
        if self.controller_port:
            return self.controller_port
        record = self.home / "controller.port"
        if record.is_file() and not _port_answers(int(record.read_text())):
            return int(record.read_text())
        cport = free_port()
        record.write_text(str(cport))
        return cport

    def _java(self, libs: Path, main: str, *args: str) -> list[str]:
        opts = [*_JVM_OPTS, f"-Dkafka.logs.dir={self.home}",
                f"-Dlog4j2.configurationFile={_DEPLOY_DIR / 'log4j2.yaml'}"]
        return [_tool("java"), *opts, "-cp", f"{libs}/*", main, *args]

    def _configure(self, libs: Path) -> None:
        """Write server.properties; format KRaft storage the first time (one-voter quorum)."""
        cport, host = self._cport(), "127.0.0.1"
        listeners = f"PLAINTEXT://{host}:{self.port},CONTROLLER://{host}:{cport}"
        props = {
            "process.roles": "broker,controller", "node.id": "1",
            "listeners": listeners, "advertised.listeners": listeners,
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER", "inter.broker.listener.name": "PLAINTEXT",
            "controller.quorum.bootstrap.servers": f"{host}:{cport}",
            "log.dirs": str(self.home / "data"),
            "num.partitions": "3", "auto.create.topics.enable": "false",
            # A single broker: every internal topic must fit on one replica.
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1", "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",  # consumers in tests start at once
        }
        self._config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        if (self.home / "data" / "meta.properties").is_file():
            return
        id_file = self.home / "cluster.id"
        if not id_file.is_file():  # Kafka Uuid text: url-safe base64 of 16 bytes, no '-' first
            raw = os.urandom(16)
            raw = bytes([raw[0] & 0x7F]) + raw[1:]
            id_file.write_text(base64.urlsafe_b64encode(raw).decode().rstrip("="))
        cmd = self._java(libs, "kafka.tools.StorageTool", "format", "--standalone",
                         "-t", id_file.read_text().strip(), "-c", str(self._config))
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=self.home, timeout=120)
        if done.returncode != 0:
            raise BrokerError(f"formatting Kafka storage in {self.home} failed:\n"
                              + _tail_text(done.stdout + done.stderr))

    def start(self, timeout: float = 90) -> None:
        """Start the broker (no-op if it runs) and return once it serves metadata."""
        self.home.mkdir(parents=True, exist_ok=True)
        with _locked(self.home / ".start.lock"):
            if self.status().running:
                return
            log = self.home / "broker.log"
            since = log.stat().st_size if log.is_file() else 0  # this run's part of the log
            if self._pid() is None:  # else: alive but not answering yet, just wait below
                libs = ensure_installed()
                self._configure(libs)
                with open(self.home / "broker.out", "wb") as out:  # JVM-level output, this run
                    proc = subprocess.Popen(
                        self._java(libs, "kafka.Kafka", str(self._config)), cwd=self.home,
                        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                        start_new_session=True)  # survives the CLI that started it
                _CHILDREN[proc.pid] = proc
                (self.home / "broker.pid").write_text(str(proc.pid))
            try:
                self._wait_ready(timeout, since)
            except BrokerError:
                self.stop(timeout=10)
                raise

    def _wait_ready(self, timeout: float, since: int) -> None:
        """Poll until a metadata request succeeds; fail fast if the JVM dies."""
        # Imported here: fetch.sh imports this module with a bare python3.
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._pid() is None:
                raise BrokerError(f"Kafka broker in {self.home} exited during start:\n"
                                  + self._log_tail(since))
            if _port_answers(self.port):  # spares us librdkafka's connection-refused noise
                admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
                try:
                    left = max(0.5, min(5.0, deadline - time.monotonic()))
                    if admin.list_topics(timeout=left).brokers:
                        return
                except KafkaException:
                    pass
            time.sleep(0.2)
        raise BrokerError(f"Kafka broker at {self.bootstrap} not ready after {timeout:.0f}s:\n"
                          + self._log_tail(since))

    def _log_tail(self, since: int) -> str:
        """Explain a failed start: the first ERRORs of broker.log (the root cause comes
        first, before thousands of shutdown lines) and broker.out (JVM failures)."""
        log, out = self.home / "broker.log", self.home / "broker.out"
        lines: list[str] = []
        if log.is_file():
            with open(log, "rb") as fh:
                fh.seek(since if since <= log.stat().st_size else 0)  # 0: log rolled over
                lines = fh.read().decode(errors="replace").splitlines()
        errors = [f"{line}\n{cause}" for line, cause in zip(lines, [*lines[1:], ""][:len(lines)], strict=True)
                  if "] ERROR " in line or "] FATAL " in line][:3]
        jvm = _tail_text(out.read_text(errors="replace"), 15) if out.is_file() else ""
        return "\n".join([*errors, jvm]).strip() + f"\n(full logs: {log}, {out})"

    def stop(self, timeout: float = 30) -> bool:
        """SIGTERM (Kafka shuts down cleanly), SIGKILL after ``timeout``; True if one stopped."""
        pid = self._pid()
        if pid is not None:
            for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
                with suppress(ProcessLookupError):
                    os.kill(pid, sig)
                deadline = time.monotonic() + wait
                while self._pid() is not None and time.monotonic() < deadline:
                    time.sleep(0.1)
                if self._pid() is None:
                    break
            _CHILDREN.pop(pid, None)
        (self.home / "broker.pid").unlink(missing_ok=True)
        return pid is not None
