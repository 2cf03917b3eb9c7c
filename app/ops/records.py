"""Which offsets of a partition hold records a ``read_committed`` consumer receives.

On a topic written with Kafka transactions (the derived streams txlake writes, ksqlDB's topics
under ``exactly_once_v2``) offsets are not dense: every commit or abort writes a control record
(a *marker*) that takes an offset, and records of aborted transactions keep theirs. No consumer
reading committed data ever receives either, so no sink can hold them. ``txlake progress`` and
``txlake verify`` ask these helpers what is really there instead of trusting ``end offset - 1``.
Reads are bounded windows of the log, never the whole topic unless asked.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition

__all__ = ["last_record_offset", "record_offsets"]

_FETCH_TIMEOUT_MS = 2000


async def record_offsets(consumer: AIOKafkaConsumer, tp: TopicPartition, first: int, last: int) -> list[int]:
    """The offsets in ``first..last`` (inclusive) that hold committed records, ascending.

    ``consumer`` is started, not subscribed, and reads with ``isolation_level="read_committed"``;
    ``tp`` becomes its only assignment. ``last`` must be below the partition's last stable offset.
    Raises TimeoutError if the broker returns nothing while the position is still below ``last``.
    """
    if last < first:
        return []
    consumer.assign([tp])
    consumer.seek(tp, first)
    found: list[int] = []
    while await consumer.position(tp) <= last:
        fetched = await consumer.getmany(tp, timeout_ms=_FETCH_TIMEOUT_MS, max_records=50_000)
        if not fetched and await consumer.position(tp) <= last:
            raise TimeoutError(f"{tp.topic}[{tp.partition}]: no answer reading offsets {first}..{last}")
        found.extend(m.offset for m in fetched.get(tp, ()) if m.offset <= last)
    return found


async def last_record_offset(consumer: AIOKafkaConsumer, tp: TopicPartition, start: int, end: int) -> int:
    """The offset of the last committed record below ``end`` (the last stable offset), or -1.

    Reads backwards in growing windows from ``end``: markers and aborted records are skipped by
    the consumer, so the last offset it delivers is the answer. ``start`` is the log start.
    """
    window = 16
    high = end
    while high > start:
        low = max(start, high - window)
        offsets = await record_offsets(consumer, tp, low, high - 1)
        if offsets:
            return offsets[-1]
        high, window = low, window * 16
    return -1
