"""The stream fetcher's batching and bookkeeping, driven by a scripted consumer.

The real broker path (group membership, rebalances, commits) is covered by the integration
tests; here the consumer is a stand-in that returns scripted ``getmany()`` results.
"""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from app.core.feeds import Feed
from app.core.settings import Settings
from app.runtime.fetcher import StreamFetcher

FEED = Feed(name="transaction_stream", topic="tx", record="transaction", dataset="streams/transaction_stream")
P0, P1 = TopicPartition("tx", 0), TopicPartition("tx", 1)


class Clock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScriptedConsumer:
    """Returns one scripted getmany() result per call (each call takes ``poll_s`` on the clock), then stops the fetcher."""

    def __init__(self, fetcher: StreamFetcher, script: list[dict], clock: Clock, poll_s: float) -> None:
        self.fetcher, self.script, self.clock, self.poll_s = fetcher, list(script), clock, poll_s
        self.paused_partitions: set[TopicPartition] = set()

    def assignment(self) -> set[TopicPartition]:
        return {P0, P1}

    def paused(self) -> set[TopicPartition]:
        return set(self.paused_partitions)

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused_partitions |= set(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused_partitions -= set(partitions)

    async def getmany(self, timeout_ms: int, max_records: int) -> dict:
        self.clock.now += self.poll_s
        if not self.script:
            self.fetcher.stop()
            return {}
        return self.script.pop(0)


def _records(tp: TopicPartition, first: int, last: int) -> list[ConsumerRecord]:
    return [
        ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, None, b"{}", None, 0, 2, ())
        for offset in range(first, last + 1)
    ]


async def _run(script: list[dict], flush_size: int = 3, rotate_ms: int = 60_000, land: bool = True, poll_s: float = 0):
    delivered = []

    async def deliver(batch):
        delivered.append(batch)
        if land:
            batch.landed.set_result(None)

    async def held_through(feed, partition):
        return -1

    settings = Settings(batching={"flush_size": flush_size, "rotate_interval_ms": rotate_ms})
    clock = Clock()
    fetcher = StreamFetcher(settings, [FEED], deliver, held_through, clock=clock)
    fetcher.consumer = ScriptedConsumer(fetcher, script, clock, poll_s)
    fetcher._assigned = {P0, P1}
    await fetcher._fetch(flush_size, rotate_ms / 1000)
    await asyncio.sleep(0)
    return fetcher, delivered


def _offsets(batch) -> list[tuple[int, int]]:
    return [(m.partition, m.offset) for m in batch.messages]


async def test_chunks_are_flush_size_per_partition_and_offsets_never_repeat():
    # The second poll repeats offsets 1..2 of partition 0, as after a seek in a rebalance.
    fetcher, delivered = await _run([{P0: _records(P0, 0, 3), P1: _records(P1, 0, 1)}, {P0: _records(P0, 1, 6)}])
    chunks = [_offsets(batch) for batch in delivered]
    assert chunks == [[(0, 0), (0, 1), (0, 2)], [(0, 3), (0, 4), (0, 5)]]
    assert fetcher._pending[P0][0].offset == 6 and len(fetcher._pending[P1]) == 2
    assert fetcher._landed == {P0: 6}


async def test_a_chunk_that_waited_the_rotate_interval_is_handed_over():
    fetcher, delivered = await _run([{P1: _records(P1, 0, 1)}, {}], flush_size=100, rotate_ms=10, poll_s=0.02)
    assert [_offsets(batch) for batch in delivered] == [[(1, 0), (1, 1)]]
    assert fetcher._landed == {P1: 2}


async def test_a_feed_with_too_many_batches_in_flight_is_paused():
    from app.runtime.fetcher import MAX_IN_FLIGHT

    script = [{P0: _records(P0, i * 3, i * 3 + 2)} for i in range(MAX_IN_FLIGHT + 1)]
    fetcher, delivered = await _run(script, land=False)
    assert len(delivered) == MAX_IN_FLIGHT + 1
    fetcher._apply_backpressure()
    assert fetcher.consumer.paused() == {P0, P1}
    for batch in delivered:
        batch.landed.set_result(None)
    await asyncio.sleep(0)
    fetcher._apply_backpressure()
    assert fetcher.consumer.paused() == set()
    assert fetcher._landed == {P0: 3 * (MAX_IN_FLIGHT + 1)}


async def test_a_feed_with_too_many_messages_in_flight_is_paused(monkeypatch):
    # Larger batches (a raised flush_size) hold more memory each: the bound counts messages too.
    import app.runtime.fetcher

    monkeypatch.setattr(app.runtime.fetcher, "MAX_IN_FLIGHT_MESSAGES", 6)
    script = [{P0: _records(P0, i * 3, i * 3 + 2)} for i in range(2)]
    fetcher, delivered = await _run(script, land=False)
    fetcher._apply_backpressure()
    assert len(delivered) == 2 and fetcher.consumer.paused() == {P0, P1}
    delivered[0].landed.set_result(None)
    await asyncio.sleep(0)
    fetcher._apply_backpressure()
    assert fetcher.consumer.paused() == set() and fetcher.in_flight_messages("tx") == 3


async def test_revocation_drops_what_was_buffered_for_the_lost_partitions():
    fetcher, _ = await _run([{P0: _records(P0, 0, 1), P1: _records(P1, 0, 1)}], flush_size=10)

    async def no_commit(*_args, **_kwargs):
        return None

    fetcher._commit = no_commit
    await fetcher.on_partitions_revoked({P1})
    assert P1 not in fetcher._pending and len(fetcher._pending[P0]) == 2
    assert fetcher.assignment() == {P0} and fetcher.rebalancing
