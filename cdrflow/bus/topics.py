"""Every topic, declared once: name, partitions, retention, and its dead-letter topic.

Record-level topics are keyed by file id, so one file's batches stay in order
on one partition; file-level topics are keyed by fingerprint (dedupe sees
identical content on one partition, in arrival order).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)

from cdrflow.errors import BrokerError

DAY_MS = 24 * 3600 * 1000


RECORD_MESSAGE_BYTES = 8 * 1024 * 1024
"""Largest message on a record-level topic: a batch of 10,000 rated calls is 2–3 MB of JSON
(less after lz4). File-level topics keep the broker's default (about 1 MB)."""


@dataclass(frozen=True)
class TopicSpec:
    suffix: str
    partitions: int
    retention_days: int
    max_message_bytes: int | None = None


class Topic(Enum):
    FILE_ARRIVED = TopicSpec("file-arrived", 3, 14)
    FILE_HELD = TopicSpec("file-held", 3, 14)
    FILE_ACCEPTED = TopicSpec("file-accepted", 3, 14)
    FILE_PARTS = TopicSpec("file-parts", 6, 14)
    RECORD_PARSED = TopicSpec("record-parsed", 6, 7, RECORD_MESSAGE_BYTES)
    CALL_RATED = TopicSpec("call-rated", 6, 7, RECORD_MESSAGE_BYTES)
    RUN_CLOSED = TopicSpec("run-closed", 3, 30)
    INVOICE_ISSUED = TopicSpec("invoice-issued", 3, 90)
    CREDIT_NOTE_ISSUED = TopicSpec("credit-note-issued", 3, 90)
    ADMIN_COMMANDS = TopicSpec("admin-commands", 3, 30)


RECORD_SUFFIXES = tuple("." + t.value.suffix for t in Topic if t.value.max_message_bytes)
"""Name endings of the topics that carry record-level batches."""

DEAD_LETTER_SUFFIX = ".dead-letter"
DEAD_LETTER_RETENTION_DAYS = 90


def topic_name(namespace: str, topic: Topic) -> str:
    return f"{namespace}.{topic.value.suffix}"


def dead_letter_name(namespace: str, topic: Topic) -> str:
    """Each consumed topic has its own dead-letter topic beside it."""
    return topic_name(namespace, topic) + DEAD_LETTER_SUFFIX


def topic_config(spec: TopicSpec) -> dict[str, str]:
    config = {"retention.ms": str(spec.retention_days * DAY_MS)}
    if spec.max_message_bytes:
        config["max.message.bytes"] = str(spec.max_message_bytes)
    return config


def declared_topics(namespace: str) -> list[NewTopic]:
    topics = []
    for topic in Topic:
        spec = topic.value
        topics.append(
            NewTopic(
                topic_name(namespace, topic),
                num_partitions=spec.partitions,
                replication_factor=-1,
                config=topic_config(spec),
            )
        )
        topics.append(
            NewTopic(
                dead_letter_name(namespace, topic),
                num_partitions=1,
                replication_factor=-1,
                config={"retention.ms": str(DEAD_LETTER_RETENTION_DAYS * DAY_MS)},
            )
        )
    return topics


def provision_topics(bootstrap: str, namespace: str, timeout: float = 30) -> list[str]:
    """Create whatever declared topic is missing; an existing one with fewer partitions than
    declared gets more (partitions are only ever added), and the record-level ones' message limit.
    Returns created names."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        listed = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise BrokerError(f"can't list topics on {bootstrap}: {exc}") from exc
    existing = set(listed)
    _raise_message_limits(admin, namespace, existing, timeout)
    _raise_partition_counts(admin, namespace, {name: len(t.partitions) for name, t in listed.items()}, timeout)
    missing = [t for t in declared_topics(namespace) if t.topic not in existing]
    if not missing:
        return []
    created = []
    for name, future in admin.create_topics(missing, operation_timeout=timeout).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise BrokerError(f"can't create topic {name} on {bootstrap}: {exc}") from exc
    return created


def _raise_partition_counts(admin: AdminClient, namespace: str, partitions: dict[str, int], timeout: float) -> None:
    """A topic declared here with more partitions than it has on the broker gets them (how a
    running cluster scales out: raise the count in ``Topic``, run ``cdrflow topics``). Keys of
    a file's batches then hash to other partitions: harmless, as nothing relies on their order."""
    grow = [NewPartitions(topic_name(namespace, topic), topic.value.partitions) for topic in Topic
            if 0 < partitions.get(topic_name(namespace, topic), topic.value.partitions) < topic.value.partitions]
    if not grow:
        return
    for name, future in admin.create_partitions(grow, operation_timeout=timeout).items():
        try:
            future.result()
        except KafkaException as exc:
            raise BrokerError(f"can't add partitions to {name} on the broker: {exc}") from exc


def _raise_message_limits(admin: AdminClient, namespace: str, existing: set[str], timeout: float) -> None:
    """Topics made by an older cdrflow keep the broker's 1 MB limit: set the record-level ones'
    limit, so the larger batches of this version fit (idempotent; a no-op when already set)."""
    resources = [
        ConfigResource(ConfigResource.Type.TOPIC, topic_name(namespace, topic), incremental_configs=[
            ConfigEntry("max.message.bytes", str(topic.value.max_message_bytes),
                        incremental_operation=AlterConfigOpType.SET)])
        for topic in Topic if topic.value.max_message_bytes and topic_name(namespace, topic) in existing
    ]
    if not resources:
        return
    for resource, future in admin.incremental_alter_configs(resources, request_timeout=timeout).items():
        try:
            future.result()
        except KafkaException as exc:
            raise BrokerError(f"can't set max.message.bytes of {resource.name} on the broker: {exc}") from exc
