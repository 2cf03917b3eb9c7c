"""The stream agent: one per stream feed. Take a fetched batch, land it, report it landed.

The :class:`~app.fetcher.StreamFetcher` reads the feed's topic in whole batches (up to
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

from app.feeds import Feed
from app.fetcher import FetchedBatch
from app.landing import FeedLanding, RawMessage

__all__ = ["register_stream_agent"]

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
    return app.agent(app.channel(), name=f"txlake.{feed.name}")(land_batches)
