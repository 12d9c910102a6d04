"""The Kafka bus, wrapped once. Nothing outside this package imports confluent-kafka
(the local broker manager only asks a broker whether it answers)."""

from cdrflow.bus.consumer import RETRACT, Outgoing, ServiceLoop
from cdrflow.bus.producer import EventProducer
from cdrflow.bus.topics import Topic, provision_topics, topic_name

__all__ = ["RETRACT", "EventProducer", "Outgoing", "ServiceLoop", "Topic", "provision_topics", "topic_name"]
