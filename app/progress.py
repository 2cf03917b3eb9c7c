"""How far each feed has landed: Kafka's end offsets against each sink's ledger.

Read-only and safe while workers run; used by ``txlake progress``, the demo,
the tests and the benchmark to know when everything produced has landed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from app.feeds import Feed
from app.security import kafka_client_options
from app.settings import Settings
from app.sinks.lake import read_landed_through
from app.sinks.lake_storage import open_lake_storage
from app.sinks.warehouse import WarehouseSink

__all__ = ["PartitionProgress", "feed_progress", "wait_until_landed"]


@dataclass(frozen=True)
class PartitionProgress:
    """One partition of one feed: the last offset in Kafka and what each sink holds (-1: nothing)."""

    feed: str
    topic: str
    partition: int
    last_offset: int
    lake: int
    warehouse: int | None  # None: the feed has no warehouse tables

    @property
    def landed(self) -> bool:
        return self.lake >= self.last_offset and (self.warehouse is None or self.warehouse >= self.last_offset)


async def _last_offsets(settings: Settings, topics: list[str]) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(**kafka_client_options(settings.kafka))
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    partitions = [
        TopicPartition(topic["topic"], p["partition"])
        for topic in described
        if not topic.get("error_code")
        for p in topic["partitions"]
    ]
    consumer = AIOKafkaConsumer(**kafka_client_options(settings.kafka), enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions) if partitions else {}
        return {tp: end - 1 for tp, end in ends.items()}
    finally:
        await consumer.stop()


async def feed_progress(settings: Settings, feeds: tuple[Feed, ...]) -> list[PartitionProgress]:
    """The progress of every partition of every feed."""
    last = await _last_offsets(settings, [feed.topic for feed in feeds])
    lake_storage = open_lake_storage(settings.lake)  # one S3 client for every ledger read
    warehouse = WarehouseSink(settings.mysql) if any(feed.warehouse for feed in feeds) else None
    rows = []
    try:
        for feed in feeds:
            for tp in sorted((tp for tp in last if tp.topic == feed.topic), key=lambda tp: tp.partition):
                lake = read_landed_through(lake_storage, feed.dataset, feed.topic, tp.partition)
                held = (
                    await warehouse.landed_through(feed.name, feed.topic, tp.partition)
                    if warehouse is not None and feed.warehouse
                    else None
                )
                rows.append(PartitionProgress(feed.name, feed.topic, tp.partition, last[tp], lake, held))
    finally:
        if warehouse is not None:
            await warehouse.stop()
    return rows


async def wait_until_landed(
    settings: Settings, feeds: tuple[Feed, ...], timeout_s: float, poll_s: float = 0.5
) -> list[PartitionProgress]:
    """Poll until every partition has landed what Kafka held at each poll; raise TimeoutError otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = await feed_progress(settings, feeds)
        if rows and all(row.landed for row in rows):
            return rows
        if time.monotonic() > deadline:
            behind = [r for r in rows if not r.landed]
            raise TimeoutError(f"not landed after {timeout_s:.0f}s: {behind}")
        await asyncio.sleep(poll_s)
