"""`produce` against the real broker: every message lands, keyed, and decodes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from models.derive import Blacklist
from models.transaction import BlacklistedTransaction, FlattenedLine, Transaction, decode
from tools.loadgen import StreamTopics, generate, produce

pytestmark = pytest.mark.integration

COUNT = 2000
PARTITIONS = 3
NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
BLACKLIST = Blacklist(countries={"ru"}, payment_methods={"PM-3"})


async def read_all(bootstrap: str, topic: str, expected: int) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of `topic`, from the beginning to the end offsets seen at the start."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        assert sum(ends.values()) == expected, f"{topic}: {ends}"
        messages: list[tuple[bytes, bytes]] = []
        while len(messages) < expected:
            batches = await consumer.getmany(timeout_ms=2000, max_records=10_000)
            assert batches, f"{topic}: stalled at {len(messages)} of {expected}"
            for records in batches.values():
                assert all(record.timestamp > 0 for record in records)
                messages.extend((record.key, record.value) for record in records)
        return messages
    finally:
        await consumer.stop()


async def test_produce_lands_every_message(
    kafka_bootstrap: str, topic_factory: Callable[..., Awaitable[str]]
) -> None:
    topics = StreamTopics(
        transactions=await topic_factory("transaction_stream", partitions=PARTITIONS),
        flattened=await topic_factory("transaction_flattened", partitions=PARTITIONS),
        anonymized=await topic_factory("transaction_stream_anonymized", partitions=PARTITIONS),
        blacklisted=await topic_factory("transaction_stream_blacklisted", partitions=PARTITIONS),
    )
    report = await produce(
        kafka_bootstrap, topics, COUNT, seed=11, now=NOW, anonymization_key=b"k", blacklist=BLACKLIST
    )
    expected = list(generate(COUNT, seed=11, now=NOW))
    flagged = sum(tx.user.country == "RU" or tx.payment_method.id == "PM-3" for tx in expected)
    assert report.counts == {
        topics.transactions: COUNT,
        topics.flattened: sum(len(tx.products) for tx in expected),
        topics.anonymized: COUNT,
        topics.blacklisted: flagged,
    }
    assert flagged > 0

    kinds = {
        topics.transactions: Transaction,
        topics.flattened: FlattenedLine,
        topics.anonymized: Transaction,
        topics.blacklisted: BlacklistedTransaction,
    }
    for topic, model in kinds.items():
        messages = await read_all(kafka_bootstrap, topic, report.counts[topic])
        records = [decode(model, value) for _, value in messages]
        assert all(key == record.transaction_id.encode() for (key, _), record in zip(messages, records, strict=True))
        ids = Counter(record.transaction_id for record in records)
        if topic == topics.flattened:
            assert ids == Counter({tx.transaction_id: len(tx.products) for tx in expected})
        else:
            assert len(ids) == len(records)  # no duplicates (idempotent producer)
        if topic == topics.anonymized:
            assert all(record.user.email.endswith("@anonymized.invalid") for record in records)
