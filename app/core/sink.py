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

Every sink has the same five methods, called by the runtime (:mod:`app.runtime`):

* :meth:`Sink.start` once, before anything else;
* :meth:`Sink.position` when this worker takes over a partition: where to resume;
* :meth:`Sink.write` for each batch (never concurrently for one partition);
* :meth:`Sink.probe` by the readiness probe;
* :meth:`Sink.stop` on a clean shutdown (not guaranteed to run: SIGKILL, OOM).

A sink *has* a :class:`Ledger` (composed, not inherited): the ledger reads
positions without side effects, so observers (``txlake progress``, ``verify``)
use the same object the sink commits through.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from app.core.feeds import Feed

__all__ = ["NOTHING_HELD", "Batch", "Ledger", "Sink"]

NOTHING_HELD = -1
"""The position of a partition a sink holds nothing of."""


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


class Ledger(Protocol):
    """Where a sink records, per (feed, partition), the highest offset it holds."""

    async def read(self, feed: Feed, partition: int) -> int:
        """The committed position (:data:`NOTHING_HELD` if none), read without side effects.

        Safe while workers run; a concurrent commit is seen whole or not at all.
        """
        ...


class Sink(abc.ABC):
    """A store that lands batches idempotently (see the module docstring for the call order).

    ``name`` is how ``feeds.toml`` names the sink (``sinks = ["lake", "warehouse"]``), and the
    ``sink`` label of its metrics.
    """

    name: str
    ledger: Ledger

    async def start(self) -> None:  # noqa: B027 - optional: nothing to open by default
        """Open connections and resources; idempotent.

        Raises :class:`~app.core.errors.TransientError` if the store is unreachable (the caller
        retries), :class:`~app.core.errors.ConfigurationError` if it can never work as set up.
        """

    async def position(self, feed: Feed, partition: int) -> int:
        """Where this sink stands on a partition this worker has just been assigned.

        The highest offset held (:data:`NOTHING_HELD` if none), read from the store, not from
        a cache: another worker may have moved the partition on since this one last owned it.
        A sink whose commit can be interrupted half way (the lake's file moves) finishes it
        first. Raises :class:`~app.core.errors.TransientError` when the store cannot answer.
        """
        return await self.ledger.read(feed, partition)

    @abc.abstractmethod
    async def write(self, batch: Batch) -> int:
        """Land ``batch`` and advance the ledger to ``batch.last_offset``, atomically.

        Idempotent: records at or below the ledger are skipped, so a replay of
        offsets already held changes nothing. Returns the number of records
        newly landed. Raises :class:`~app.core.errors.TransientError` when the store
        failed; then nothing of the batch is visible and the ledger is unchanged,
        and the caller retries the same batch.
        """

    async def probe(self) -> None:  # noqa: B027 - optional: ready by default
        """Raise unless the store would accept a write now (readiness); cheap and bounded."""

    async def stop(self) -> None:  # noqa: B027 - optional: nothing to release by default
        """Release resources. Safe to call twice or without :meth:`start`."""
