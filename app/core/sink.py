"""The sink contract: how a batch of decoded records reaches a store exactly once.

A :class:`Batch` holds the valid records of one Kafka partition between two
offsets. Records that failed to decode are not in it (they went to the
dead-letter topic) but their offsets are still covered by ``last_offset``: a
sink that lands the batch has dealt with every offset up to ``last_offset``.

Exactly once rests on each sink keeping its own *offset ledger* per
(feed, topic, partition) -- the highest offset it holds -- and storing it
atomically with the data. The sink, not the consumer group, is the truth: a
replay after a crash or a rebalance hands a sink records it already holds, and
the sink skips every offset at or below its ledger.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.core.feeds import Feed

__all__ = ["Batch", "Sink"]


@dataclass(frozen=True, slots=True)
class Batch:
    """Valid records of one topic partition, in offset order.

    ``records[i]`` was read at ``offsets[i]``; ``first_offset``..``last_offset``
    is the whole range the batch accounts for, dead-lettered offsets included.
    """

    feed: Feed
    partition: int
    first_offset: int
    last_offset: int
    records: Sequence[Any] = field(default_factory=tuple)
    offsets: Sequence[int] = field(default_factory=tuple)

    @property
    def topic(self) -> str:
        return self.feed.topic

    def after(self, landed_through: int) -> Batch:
        """The same batch without the records at or below ``landed_through`` (already held)."""
        if landed_through < self.first_offset:
            return self
        keep = [i for i, offset in enumerate(self.offsets) if offset > landed_through]
        return Batch(
            self.feed,
            self.partition,
            max(self.first_offset, landed_through + 1),
            self.last_offset,
            [self.records[i] for i in keep],
            [self.offsets[i] for i in keep],
        )

    def describe(self) -> str:
        return f"{self.topic}[{self.partition}] {self.first_offset}..{self.last_offset}"


class Sink(abc.ABC):
    """A store that lands batches idempotently.

    Lifecycle: :meth:`start` once before the first write, :meth:`write` for each
    batch (never concurrently for the same partition), :meth:`stop` on a clean
    shutdown. ``stop`` is not guaranteed to run (SIGKILL, OOM); correctness
    never depends on it.
    """

    name: str

    async def start(self) -> None:
        """Open connections and resources. Raises :class:`~app.core.errors.TransientError` if unreachable."""

    @abc.abstractmethod
    async def write(self, batch: Batch) -> int:
        """Land ``batch`` and advance the ledger to ``batch.last_offset``, atomically.

        Idempotent: records at or below the ledger are skipped, so a replay of
        offsets already held changes nothing. Returns the number of records
        newly landed. Raises :class:`~app.core.errors.TransientError` when the store
        failed; then nothing of the batch is visible and the ledger is unchanged,
        and the caller retries the same batch.
        """

    async def stop(self) -> None:
        """Release resources. Safe to call twice or without :meth:`start`."""
