"""The stream agent: one per stream feed. Take a batch, land it, then ack it.

Faust's ``take()`` acks a batch in a ``finally`` even when the body raised, so
a failed flush would silently lose the batch. This agent uses ``noack_take()``
and acks each event only after :meth:`FeedLanding.land` returned, i.e. after
the batch is in every sink or in the dead-letter topic. Values arrive as raw
bytes (``value_serializer="raw"``): decoding happens in the landing, where a
bad record is dead-lettered instead of ending the agent's loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import faust

from app.feeds import Feed
from app.landing import FeedLanding, RawMessage
from app.settings import BatchingSettings

__all__ = ["register_stream_agent"]

logger = logging.getLogger(__name__)

EXIT_UNEXPECTED = 70  # EX_SOFTWARE: a bug, not the outside world


def register_stream_agent(app: faust.App, feed: Feed, landing: FeedLanding, batching: BatchingSettings) -> Any:
    """Define the agent that lands ``feed``'s topic on ``app``; returns the Faust agent."""
    topic = app.topic(feed.topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    within = batching.rotate_interval_ms / 1000

    async def land_stream(stream: faust.StreamT) -> None:
        async for events in stream.noack_take(batching.flush_size, within=within):
            messages = [
                RawMessage(event.message.partition, event.message.offset, event.message.key, event.message.value)
                for event in events
            ]
            try:
                await landing.land(messages)
            except asyncio.CancelledError:
                raise  # shutting down: the batch stays unacked and is replayed
            except Exception:
                # Not a transient failure (those are retried inside land()): a bug.
                # Leaving the batch unacked and carrying on could let a commit skip
                # it (faust#606), so stop the process; the restart replays it.
                logger.critical("feed %s: unexpected error, exiting", feed.name, exc_info=True)
                logging.shutdown()
                os._exit(EXIT_UNEXPECTED)
            for event in events:
                await stream.ack(event)

    land_stream.__name__ = land_stream.__qualname__ = f"land_{feed.name}"
    return app.agent(topic, name=f"txlake.{feed.name}")(land_stream)
