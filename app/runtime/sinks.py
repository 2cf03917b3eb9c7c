"""The worker's sinks: built once from the settings, named by the feeds, driven through one contract.

``feeds.toml`` names each feed's sinks (``sinks = ["lake", "warehouse", "deltas"]``);
:func:`build_sinks` makes one instance of each sink the deployment uses, shared by every feed
that names it. A sink the settings turn off (``deltas`` while ``tables.derive`` is off) is left
out, and the feeds naming it land without it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator, Sequence

from app.core.dead_letters import DeadLetterPublisher
from app.core.feeds import Feed
from app.core.retry import Backoff, retry_transient
from app.core.security import kafka_client_options
from app.core.settings import Settings
from app.core.sink import Sink
from app.lake.sink import LakeSink
from app.tables.rates import load_rates
from app.tables.sink import DeltaSink
from app.warehouse.facts import FactSink
from app.warehouse.sink import WarehouseSink

__all__ = ["SinkSet", "build_sinks"]

logger = logging.getLogger(__name__)


class SinkSet:
    """The sinks of a worker, by name, and what the runtime asks of all of them at once."""

    def __init__(self, sinks: Iterable[Sink]) -> None:
        self.by_name = {sink.name: sink for sink in sinks}

    def of(self, feed: Feed) -> list[Sink]:
        """The feed's sinks that this deployment runs, in the order the feed names them."""
        return [self.by_name[name] for name in feed.sinks if name in self.by_name]

    def used_by(self, feeds: Iterable[Feed]) -> SinkSet:
        """Only the sinks some of ``feeds`` name."""
        return SinkSet(sink for sink in self.by_name.values() if any(sink in self.of(feed) for feed in feeds))

    async def position(self, feed: Feed, partition: int) -> int:
        """Where the feed's partition resumes from: the lowest position of its sinks."""
        return min([await sink.position(feed, partition) for sink in self.of(feed)])

    async def start(self, backoff: Backoff) -> None:
        """Start every sink, retrying an unreachable store with backoff until it answers."""
        await asyncio.gather(
            *(retry_transient(sink.start, what=f"starting the {sink.name} sink", backoff=backoff) for sink in self)
        )

    async def stop(self) -> None:
        for sink in self:
            try:
                await sink.stop()
            except Exception:  # noqa: BLE001 - shutting down: release the others anyway
                logger.warning("stopping the %s sink failed", sink.name, exc_info=True)

    def __iter__(self) -> Iterator[Sink]:
        return iter(self.by_name.values())


def build_sinks(
    settings: Settings,
    feeds: Sequence[Feed],
    dead_letters: DeadLetterPublisher | None,
    table_partitions: int | None,
) -> SinkSet:
    """One instance of every sink ``feeds`` name; ``deltas`` only with ``table_partitions`` (derivation on).

    Without ``dead_letters`` the sinks are for reading positions only (``txlake progress``).
    """
    named = {name for feed in feeds for name in feed.sinks}
    sinks: list[Sink] = []
    if "lake" in named:
        sinks.append(LakeSink.from_settings(settings.lake))
    if "warehouse" in named:
        sinks.append(WarehouseSink(settings.mysql))
    if "facts" in named:
        sinks.append(FactSink(settings.mysql, dead_letters))
    if "deltas" in named and table_partitions:
        sinks.append(
            DeltaSink(
                settings.mysql,
                kafka_client_options(settings.kafka),
                settings.table_deltas_topic,
                table_partitions,
                load_rates(settings.tables.exchange_rates_file),
            )
        )
    return SinkSet(sinks)
