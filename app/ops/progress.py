"""How far each feed has landed: Kafka's end offsets against each sink's ledger.

Read-only and safe while workers run; used by ``txlake progress``, the demo,
the tests and the benchmark to know when everything produced has landed.

Each feed's partition reports the position of every sink the feed names (read through the
sinks' own :class:`~app.core.sink.Ledger` objects, never started). With ``tables.derive`` on,
the deltas topic adds rows (feed ``table_deltas``) whose position is the table agent's committed
offset: only when those have caught up have the table topics received every change.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from app.core.feeds import Feed, derivation_source
from app.core.security import kafka_client_options
from app.core.settings import Settings
from app.runtime.sinks import build_sinks

__all__ = ["PartitionProgress", "feed_progress", "wait_until_landed"]

TABLE_AGENT = "table_agent"
"""The position name of the table agent's committed offset on a deltas partition."""


@dataclass(frozen=True)
class PartitionProgress:
    """One partition of one feed: the last offset in Kafka and what each sink holds (-1: nothing)."""

    feed: str
    topic: str
    partition: int
    last_offset: int
    positions: dict[str, int] = field(default_factory=dict)  # sink name -> landed through

    @property
    def lake(self) -> int | None:
        """The lake's position (None: the feed does not land in the lake)."""
        return self.positions.get("lake")

    @property
    def warehouse(self) -> int | None:
        """The lowest position of the feed's MySQL-ledgered sinks (None: it has none)."""
        held = [held for name, held in self.positions.items() if name != "lake"]
        return min(held) if held else None

    @property
    def landed(self) -> bool:
        return all(held >= self.last_offset for held in self.positions.values())


async def _last_offsets(settings: Settings, topics: list[str]) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(**kafka_client_options(settings.kafka))
    await admin.start()
    try:
        existing = set(await admin.list_topics())  # describing a missing topic may auto-create it
        described = await admin.describe_topics([topic for topic in topics if topic in existing])
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
    """The progress of every partition of every feed (and of the deltas topic when deriving)."""
    source = derivation_source(feeds) if settings.tables.derive else None
    topics = [feed.topic for feed in feeds] + ([settings.table_deltas_topic] if source else [])
    last = await _last_offsets(settings, topics)
    deltas_partitions = sum(tp.topic == settings.table_deltas_topic for tp in last) if source else None
    sinks = build_sinks(settings, feeds, None, deltas_partitions or None)
    rows = []
    try:
        for feed in feeds:
            for tp in sorted((tp for tp in last if tp.topic == feed.topic), key=lambda tp: tp.partition):
                positions = {sink.name: await sink.ledger.read(feed, tp.partition) for sink in sinks.of(feed)}
                rows.append(PartitionProgress(feed.name, feed.topic, tp.partition, last[tp], positions))
        if source is not None:
            rows.extend(await _deltas_progress(settings, {tp: o for tp, o in last.items() if tp.topic == settings.table_deltas_topic}))
    finally:
        await sinks.stop()
    return rows


async def _deltas_progress(settings: Settings, last: dict[TopicPartition, int]) -> list[PartitionProgress]:
    """The table agent's committed position on each deltas partition (Kafka commits the next offset)."""
    consumer = AIOKafkaConsumer(
        **kafka_client_options(settings.kafka), group_id=settings.faust_app_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        rows = []
        for tp in sorted(last, key=lambda tp: tp.partition):
            committed = await consumer.committed(tp)
            position = -1 if committed is None else committed - 1
            rows.append(PartitionProgress("table_deltas", tp.topic, tp.partition, last[tp], {TABLE_AGENT: position}))
        return rows
    finally:
        await consumer.stop()


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
