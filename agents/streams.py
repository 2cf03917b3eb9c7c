"""The stream agent: one per stream feed. Take a fetched batch, land it, report it landed.

The :class:`~app.runtime.fetcher.StreamFetcher` reads the feed's topic in whole batches (up to
``flush_size`` messages or ``rotate_interval_ms``) and sends each batch to this agent's
in-memory channel. The agent hands it to :meth:`FeedLanding.land` -- decode, dead-letter the
bad, write every sink -- and only then resolves ``batch.landed``, which lets the fetcher
commit the batch's offsets. Values arrive as raw bytes: a bad record is dead-lettered in the
landing instead of ending the agent's loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import faust
from mode.utils.queues import FlowControlEvent, ThrowableQueue

from app.core.feeds import Feed
from app.runtime.fetcher import FetchedBatch
from app.runtime.landing import FeedLanding, RawMessage

__all__ = ["BatchChannel", "register_stream_agent"]

logger = logging.getLogger(__name__)

EXIT_UNEXPECTED = 70  # EX_SOFTWARE: a bug, not the outside world


def register_stream_agent(app: faust.App, feed: Feed, landing: FeedLanding) -> Any:
    """Define the agent that lands ``feed``'s batches on ``app``; returns the Faust agent.

    Partitions are independent (each has its own ledger in every sink), so the agent keeps
    one *lane* per partition: a partition's chunks land one after the other, in offset order,
    while other partitions' chunks land at the same time. A batch is reported landed when
    all its chunks are. The fetcher bounds how many batches are outstanding.
    """
    lanes: dict[int, asyncio.Task[None]] = {}
    reports: set[asyncio.Task[None]] = set()  # strong references: the loop keeps only weak ones

    async def land_chunk(previous: asyncio.Task[None] | None, messages: list[RawMessage]) -> None:
        if previous is not None:
            await previous
        try:
            await landing.land(messages)
        except asyncio.CancelledError:
            raise  # shutting down: not committed, replayed by the next owner
        except Exception:
            # Not a transient failure (those are retried inside land()): a bug. Never
            # report the batch landed; stop the process, the restart replays it.
            logger.critical("feed %s: unexpected error, exiting", feed.name, exc_info=True)
            logging.shutdown()
            os._exit(EXIT_UNEXPECTED)

    async def report(batch: FetchedBatch, chunks: list[asyncio.Task[None]]) -> None:
        try:
            await asyncio.gather(*chunks)
        except asyncio.CancelledError:
            batch.landed.cancel()
            raise
        batch.landed.set_result(None)

    async def land_batches(stream: faust.StreamT) -> None:
        batch: FetchedBatch
        async for batch in stream:
            by_partition: dict[int, list[RawMessage]] = {}
            for message in batch.messages:
                by_partition.setdefault(message.partition, []).append(message)
            chunks = []
            for partition, messages in by_partition.items():
                lane = asyncio.create_task(land_chunk(lanes.get(partition), messages))
                lanes[partition] = lane
                chunks.append(lane)
            task = asyncio.create_task(report(batch, chunks))
            reports.add(task)
            task.add_done_callback(reports.discard)

    land_batches.__name__ = land_batches.__qualname__ = f"land_{feed.name}"
    return app.agent(BatchChannel(app), name=f"txlake.{feed.name}")(land_batches)


class BatchChannel(faust.Channel):
    """An in-memory channel whose batches ignore Faust's rebalances: use :meth:`hand_over`.

    Faust's channels are built for events of topics its own consumer re-reads after a rebalance,
    and drop them across one: ``agent.send()`` stamps an event with the consumer's generation and
    the agent's stream silently skips events of an older generation, and the channel's queue is
    *cleared* when Faust's flow control resumes. Our batches come from the stream fetcher, not from
    Faust's consumer: a dropped batch would never land, and the next one of its partition would
    land after a gap. So a batch is put on the queue as a plain value (no generation, nothing to
    ack), and the queue has a flow control of its own, always open: Faust suspends its flow while
    its own consumer rebalances and restores the tables -- at every start until the changelogs are
    replayed -- and the stream feeds need neither. A put waits only while the queue is full.
    """

    async def hand_over(self, batch: FetchedBatch) -> None:
        """Queue ``batch`` for the agent; waits until the agent's actor listens (at start-up)."""
        root = self._root if self._root is not None else self
        while not root._subscribers:  # noqa: SLF001 - faust has no public 'has subscribers'
            await asyncio.sleep(0.05)
        await self.put(batch)

    @property
    def queue(self) -> Any:
        if self._queue is None:
            maxsize = self.maxsize if self.maxsize is not None else self.app.conf.stream_buffer_maxsize
            self._queue = ThrowableQueue(maxsize=maxsize, flow_control=FlowControlEvent(initially_suspended=False))
        return self._queue
