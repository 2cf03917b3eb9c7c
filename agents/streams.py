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
from app.landing import FeedLanding

__all__ = ["register_stream_agent"]

logger = logging.getLogger(__name__)

EXIT_UNEXPECTED = 70  # EX_SOFTWARE: a bug, not the outside world


def register_stream_agent(app: faust.App, feed: Feed, landing: FeedLanding) -> Any:
    """Define the agent that lands ``feed``'s batches on ``app``; returns the Faust agent."""

    async def land_batches(stream: faust.StreamT) -> None:
        batch: FetchedBatch
        async for batch in stream:
            try:
                await landing.land(batch.messages)
            except asyncio.CancelledError:
                batch.landed.cancel()  # shutting down: not committed, replayed by the next owner
                raise
            except Exception:
                # Not a transient failure (those are retried inside land()): a bug. Never
                # report the batch landed; stop the process, the restart replays it.
                logger.critical("feed %s: unexpected error, exiting", feed.name, exc_info=True)
                logging.shutdown()
                os._exit(EXIT_UNEXPECTED)
            batch.landed.set_result(None)

    land_batches.__name__ = land_batches.__qualname__ = f"land_{feed.name}"
    return app.agent(app.channel(), name=f"txlake.{feed.name}")(land_batches)
