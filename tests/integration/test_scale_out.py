"""Two instances of each stage on one large file, every service its own process on the real broker
and PostgreSQL: each parser, rater and invoicer does a share, and the result is the result of
one instance each. Partitions raised on a running cluster by `cdrflow topics`."""

from __future__ import annotations

from pathlib import Path

from confluent_kafka.admin import AdminClient as KafkaAdmin
from confluent_kafka.admin import NewTopic
from sqlalchemy import func, select

from cdrflow.bus import provision_topics
from cdrflow.bus.topics import Topic, topic_name
from cdrflow.client import AdminClient
from cdrflow.db.models import Call, File
from cdrflow_app.orchestrate import spawn_service, stop_processes, wait_for_admin
from tests.integration.conftest import wait_until
from tests.integration.test_faults import write_calls

ROWS = 10_000
SCALED = ("parser", "rater", "invoicer")


def _log_events(path: Path, event: str) -> int:
    return sum(1 for line in path.read_text().splitlines() if f'"event": "{event}"' in line
               or f'"event":"{event}"' in line)


def test_two_instances_of_each_stage_share_one_file_and_store_it_once(settings, database, tmp_path):
    run = settings.model_copy(update={"batch_size": 500, "parse_part_bytes": 32 * 1024})
    path = write_calls(tmp_path / "gamma-cdr-20261002.csv", 0, ROWS)
    logs = {f"{name}{n}": tmp_path / f"{name}{n}" for name in SCALED for n in (1, 2)} | {
        "dedupe": tmp_path / "dedupe", "admin": tmp_path / "admin"}
    for directory in logs.values():
        directory.mkdir()
    procs = {key: spawn_service(key.rstrip("12"), run, str(directory)) for key, directory in logs.items()}
    try:
        wait_for_admin(run, procs, timeout=60)
        file_id = AdminClient.for_settings(run).upload(path, carrier="gamma", kind="cdr", period="daily",
                                                     direction="outbound")["file_id"]

        def rated() -> bool:
            with database.transaction() as session:
                return session.get(File, file_id) is not None and session.get(File, file_id).status == "rated"

        wait_until("the file rated by two instances of each stage", rated, timeout=120)
    finally:
        stop_processes(procs)
    with database.transaction() as session:
        stored, rows = session.execute(select(func.count(), func.count(func.distinct(Call.row)))
                                       .where(Call.file_id == file_id)).one()
    assert (stored, rows) == (ROWS, ROWS)  # every call once
    parts = {n: _log_events(logs[f"parser{n}"] / "parser.log", "file_part_parsed") for n in (1, 2)}
    stores = {n: _log_events(logs[f"invoicer{n}"] / "invoicer.log", "calls_stored") for n in (1, 2)}
    assert all(parts.values()) and sum(parts.values()) >= 10, parts  # each parser took parts of the one file
    assert all(stores.values()), stores  # each invoicer stored batches of it


def test_cdrflow_topics_adds_partitions_to_a_topic_made_with_fewer(settings):
    admin = KafkaAdmin({"bootstrap.servers": settings.bootstrap})
    namespace = settings.namespace + "grow"
    name = topic_name(namespace, Topic.RECORD_PARSED)
    admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=-1)])[name].result()
    provision_topics(settings.bootstrap, namespace)
    wait_until("the partitions added", lambda: len(admin.list_topics(name, timeout=10).topics[name].partitions)
               == Topic.RECORD_PARSED.value.partitions, timeout=30)
