"""Real parts for the integration suite: the project's own Kafka broker and a private
PostgreSQL cluster, both started here by the project's scripts and stopped afterwards.

Set CDRFLOW_TEST_KAFKA_BOOTSTRAP / CDRFLOW_TEST_DATABASE_URL to use running ones instead.
Each test gets its own database, topic namespace and data directory.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, Message
from sqlalchemy.engine import make_url

from cdrflow.bus import provision_topics
from cdrflow.db import Database, migrate
from cdrflow.filestore import FileStore
from cdrflow_app.demo import load_sample_reference
from cdrflow.localkafka import LocalKafka, free_port
from cdrflow_app.orchestrate import PIPELINE_SERVICES
from cdrflow_app.orchestrate import pipeline as run_pipeline
from cdrflow.settings import Settings
from tests.peers.tcpproxy import TcpProxy

REPO = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if external := os.environ.get("CDRFLOW_TEST_KAFKA_BOOTSTRAP"):
        yield external
        return
    broker = LocalKafka(tmp_path_factory.mktemp("kafka"), port=free_port())
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    if external := os.environ.get("CDRFLOW_TEST_DATABASE_URL"):
        yield external
        return
    data_dir = Path(tempfile.mkdtemp(prefix="cdrflow-pg-"))
    data_dir.chmod(0o755)  # the cluster runs as the postgres user
    script = REPO / "deploy/postgres/ensure-postgres.sh"
    out = subprocess.run([str(script), "start", str(data_dir / "pg"), str(free_port())],
                         check=True, capture_output=True, text=True)
    try:
        yield out.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([str(script), "stop", str(data_dir / "pg")], check=False, capture_output=True)


def _admin_dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture
def settings(tmp_path: Path, kafka_bootstrap: str, postgres_url: str) -> Iterator[Settings]:
    """A fresh namespace and database on the real broker and PostgreSQL, with sample reference data."""
    name = "t" + uuid.uuid4().hex[:12]
    with psycopg.connect(_admin_dsn(postgres_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = postgres_url.rsplit("/", 1)[0] + "/" + name
    s = Settings(data_dir=tmp_path / "data", database_url=url, kafka_bootstrap=kafka_bootstrap,
                 namespace=name, admin_port=free_port(), mailgate_port=free_port(), batch_size=200)
    provision_topics(s.bootstrap, s.namespace)
    migrate(url)
    database = Database(url)
    with database.transaction() as session:
        load_sample_reference(session, FileStore(s.file_store_dir))
    database.dispose()
    yield s
    with psycopg.connect(_admin_dsn(postgres_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def database(settings: Settings) -> Iterator[Database]:
    db = Database(settings.effective_database_url)
    yield db
    db.dispose()


UNSCHEDULED = tuple(s for s in PIPELINE_SERVICES if s != "scheduler")
"""The pipeline without the scheduler: the tests close billing runs themselves, at the moment
they choose (the sample calls are of periods long ended: a scheduler would close them at once)."""


@pytest.fixture
def running(settings: Settings, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[dict]:
    """Every pipeline service as its own process; their logs are printed if the test fails."""
    with run_pipeline(settings, log_dir=str(tmp_path), services=UNSCHEDULED) as procs:
        yield procs
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        for log_file in sorted(tmp_path.glob("*.log")):
            print(f"----- {log_file.name} -----\n" + log_file.read_text()[-4000:])


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # type: ignore[no-untyped-def]
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def wait_until(what: str, check: Callable[[], object], timeout: float = 90) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def read_topic(bootstrap: str, topic: str, count: int, timeout: float = 60) -> list[bytes]:
    """Read ``count`` messages from the start of ``topic`` as an independent observer (own group)."""
    return [msg.value() for msg in read_messages(bootstrap, topic, count, timeout)]


def read_messages(bootstrap: str, topic: str, count: int, timeout: float = 60) -> list[Message]:
    """``count`` whole messages (key, headers, value) from the start of ``topic``, as an observer."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"observer-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    messages: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(messages) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                messages.append(msg)
        return messages
    finally:
        consumer.close()


# --- faults: a database that can be slowed down or cut ------------------------------------


@pytest.fixture
def db_proxy(settings: Settings) -> Iterator[TcpProxy]:
    """A TCP proxy in front of this test's PostgreSQL, to slow it down (``latency``) or make it
    unreachable (``cut()``/``restore()``); ``proxied_settings`` points services at it."""
    url = make_url(settings.effective_database_url)
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        yield proxy


@pytest.fixture
def proxied_settings(settings: Settings, db_proxy: TcpProxy) -> Settings:
    """``settings`` with its database reached through ``db_proxy``: the same database (migrated,
    with the sample reference data), namespace and data directory."""
    url = make_url(settings.effective_database_url).set(host="127.0.0.1", port=db_proxy.port)
    return settings.model_copy(update={"database_url": url.render_as_string(hide_password=False)})
