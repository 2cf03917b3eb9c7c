"""Where a set of topics stands in Kafka: log start, last offset, and a group's committed positions.

The one reader of those positions for ``txlake progress`` and ``txlake verify``. Read-only: a
topic that does not exist is left out (never described, which could auto-create it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from app.core.security import kafka_client_options
from app.core.settings import Settings

__all__ = ["KafkaPositions", "read_positions"]


@dataclass
class KafkaPositions:
    """Per topic partition: log start, last offset (end − 1; −1 when empty), and a group's commits."""

    log_start: dict[TopicPartition, int] = field(default_factory=dict)
    last_offset: dict[TopicPartition, int] = field(default_factory=dict)
    committed: dict[TopicPartition, int] = field(default_factory=dict)

    def partitions(self, topic: str) -> list[int]:
        """The partitions of ``topic`` (empty if the topic does not exist)."""
        return sorted(tp.partition for tp in self.last_offset if tp.topic == topic)


async def read_positions(settings: Settings, topics: Iterable[str], group_id: str | None = None) -> KafkaPositions:
    """The positions of every partition of the existing ``topics``; ``group_id``'s commits if given."""
    positions = KafkaPositions()
    admin = AIOKafkaAdminClient(**kafka_client_options(settings.kafka))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        described = await admin.describe_topics([topic for topic in dict.fromkeys(topics) if topic in existing])
        committed = await admin.list_consumer_group_offsets(group_id) if group_id else {}
    finally:
        await admin.close()
    partitions = [
        TopicPartition(topic["topic"], p["partition"])
        for topic in described
        if not topic.get("error_code")
        for p in topic["partitions"]
    ]
    positions.committed = {tp: meta.offset for tp, meta in committed.items() if meta.offset >= 0}
    if not partitions:
        return positions
    consumer = AIOKafkaConsumer(**kafka_client_options(settings.kafka), enable_auto_commit=False)
    await consumer.start()
    try:
        starts = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    positions.log_start = dict(starts)
    positions.last_offset = {tp: end - 1 for tp, end in ends.items()}
    return positions
