"""The self-installed KRaft broker really starts, carries a message and stops.

Uses throw-away brokers in tmp_path on free ports, so it never touches a
developer's long-lived broker. The jars come from libs_dir() (fetched by
Maven on first use; deploy/kafka/fetch.sh pre-fetches them in CI).
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from cdrflow.errors import BrokerError
from cdrflow.localkafka import KAFKA_VERSION, LocalKafka, free_port

REPO = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] != "Z"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalKafka]:
    kafka = LocalKafka(tmp_path / "kafka", port=free_port())
    try:
        yield kafka
    finally:
        kafka.stop(timeout=10)


def test_pom_pins_the_same_kafka_version() -> None:
    pom = (REPO / "deploy" / "kafka" / "pom.xml").read_text()
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom)
    assert match is not None and match.group(1) == KAFKA_VERSION


@pytest.mark.integration
def test_start_produce_consume_stop(broker: LocalKafka) -> None:
    broker.start()
    status = broker.status()
    assert status.running and status.pid is not None
    assert status.bootstrap == broker.bootstrap == f"127.0.0.1:{broker.port}"
    pid = status.pid

    broker.start()  # idempotent: same process, no second JVM
    assert broker.status().pid == pid

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for future in admin.create_topics([NewTopic("cdr.test", num_partitions=3)]).values():
        future.result(timeout=30)

    producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    producer.produce("cdr.test", key=b"k1", value=b"call-1")
    assert producer.flush(30) == 0

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "t",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe(["cdr.test"])
    try:
        deadline, got = time.monotonic() + 30, None
        while got is None and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                got = (msg.key(), msg.value())
    finally:
        consumer.close()
    assert got == (b"k1", b"call-1")

    assert broker.stop() is True
    assert not broker.status().running
    assert broker.status().pid is None
    assert not _alive(pid)
    assert broker.stop() is False  # nothing left to stop


@pytest.mark.integration
def test_start_fails_clearly_when_port_is_taken(broker: LocalKafka) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", broker.port))
        squatter.listen()
        with pytest.raises(BrokerError, match="(?i)address already in use|not ready|exited"):
            broker.start(timeout=60)
    assert not broker.status().running
    assert broker.status().pid is None  # the failed JVM was cleaned up
