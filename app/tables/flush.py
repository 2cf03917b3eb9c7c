"""The flush: a window's keys written once each, produced in batches per topic partition.

For each deltas partition *p* whose window is flushed, :func:`plan` turns every touched key into

- its **changelog record** (only if the window changed it) on partition *p* of the state table's
  changelog topic, and the same bytes into the partition's stored state (no per-key send);
- its **output record**, the ksqlDB-format value, on the table's topic (partition *p* when the
  topic has as many partitions as the deltas topic, else Kafka's default partitioner on the key);
- the window's new buyer entries on the buyers changelog;

and :class:`BatchWriter` produces them as record batches, every record with the header
:data:`models.tables.DERIVED_HEADER` (txlake derived it: the landing holds its partition rather
than dead-letter it, see :mod:`app.runtime.holds`), (``create_batch`` / ``send_batch``), one
batch after another per topic partition, all partitions at once, and returns once the broker has
acknowledged every one. The agent then writes the progress records the same way and only after
those are acknowledged acks the deltas (:mod:`agents.tables`).

Retries: a batch the broker did not take (a timeout, a leader change) is sent again with the same
records. That is safe here: within one flush each key appears at most once per topic, so the
order between a flush's batches does not matter, and no batch of the next flush is sent before
this one is acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError
from aiokafka.producer.message_accumulator import BatchBuilder

from app.core.retry import Backoff
from app.tables.cache import PartitionCache
from app.tables.deltas import partition_of
from app.tables.state import BUYERS_TABLE
from app.tables.store import changelog_key, encode_state
from models.aggregates import AGGREGATORS
from models.tables import DERIVED_HEADER

__all__ = ["BatchWriter", "FlushPlan", "plan"]

logger = logging.getLogger(__name__)

Records = list[tuple[bytes, bytes]]
Destination = tuple[str, int]  # (topic, partition)
DERIVED = [(DERIVED_HEADER, b"1")]
"""The headers of every record the table agent writes."""


@dataclass
class FlushPlan:
    """The records of one flush by destination, and what the flush covers."""

    records: dict[Destination, Records] = field(default_factory=lambda: defaultdict(list))
    changed: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # table -> changed keys
    touched: int = 0

    @property
    def size(self) -> int:
        return sum(len(records) for records in self.records.values())


def plan(
    caches: list[PartitionCache],
    changelogs: Mapping[str, str],
    outputs: Mapping[str, tuple[str, int]],
    deltas_partitions: int,
) -> FlushPlan:
    """Drain the windows of ``caches`` into a :class:`FlushPlan`; stores the changed states' bytes.

    ``changelogs`` maps state table -> changelog topic; ``outputs`` maps table -> (topic, its
    partition count) for the tables whose values are written (all four when deriving).
    """
    flush = FlushPlan()
    records, changed = flush.records, flush.changed
    for cache in caches:
        p = cache.partition
        stored = cache.stored.tables
        entries, buyers = cache.drain()
        for table, key, state, was_changed in entries:
            flush.touched += 1
            if was_changed:
                value = encode_state(state)
                stored[table][key] = value
                records[(changelogs[table], p)].append((changelog_key(key), value))
                changed[table] += 1
            output = outputs.get(table)
            if output is not None:
                topic, partitions = output
                key_bytes = key.encode()
                target = p if partitions == deltas_partitions else partition_of(key_bytes, partitions)
                records[(topic, target)].append((key_bytes, AGGREGATORS[table].value_json(state)))
        if buyers:
            stored_buyers, destination = stored[BUYERS_TABLE], records[(changelogs[BUYERS_TABLE], p)]
            for key, source in buyers.items():
                value = encode_state(source)
                stored_buyers[key] = value
                destination.append((changelog_key(key), value))
    return flush


class BatchWriter:
    """Produces records as record batches and waits for the broker's acknowledgement of all of them."""

    def __init__(self, producer: AIOKafkaProducer, backoff: Backoff) -> None:
        self.producer = producer
        self.backoff = backoff

    async def write(self, records: Mapping[Destination, Records]) -> dict[Destination, int]:
        """Produce ``records``; returns each destination's end offset after them (the next offset).

        Retries batches the broker did not take, with backoff, for as long as it takes. Raises the
        error of a batch that failed for a reason retrying cannot fix (not authorized, unknown
        topic, ...): the caller must not ack anything of this flush then.
        """
        ends: dict[Destination, int] = {}
        sent = [
            (destination, chunk, await self._send(destination, batch))
            for destination, rows in records.items()
            for batch, chunk in self._batches(rows)
        ]
        attempt = 0
        while sent:
            failed: list[tuple[Destination, Records]] = []
            error: Exception | None = None
            for destination, chunk, delivery in sent:
                try:
                    metadata = await delivery
                except KafkaError as exc:
                    if not (isinstance(exc, KafkaTimeoutError) or exc.retriable):
                        raise
                    failed.append((destination, chunk))
                    error = exc
                    continue
                ends[destination] = max(ends.get(destination, 0), metadata.offset + len(chunk))
            if not failed:
                break
            delay = self.backoff.delay(attempt)
            attempt += 1
            logger.warning("table flush: %d batches not acknowledged (%s), sending them again in %.1f s",
                           len(failed), error, delay)
            await asyncio.sleep(delay)
            sent = [
                (destination, chunk, await self._send(destination, batch))
                for destination, rows in failed
                for batch, chunk in self._batches(rows)
            ]
        return ends

    def _batches(self, rows: Records) -> list[tuple[BatchBuilder, Records]]:
        """``rows`` as record batches of at most the producer's ``max_batch_size`` (a batch always
        takes its first record), each with the rows it holds."""
        batches = []
        batch, first = self.producer.create_batch(), 0
        for index, (key, value) in enumerate(rows):
            if batch.append(key=key, value=value, timestamp=None, headers=DERIVED) is None:
                batches.append((batch, rows[first:index]))
                batch, first = self.producer.create_batch(), index
                batch.append(key=key, value=value, timestamp=None, headers=DERIVED)
        if first < len(rows):
            batches.append((batch, rows[first:]))
        return batches

    async def _send(self, destination: Destination, batch: BatchBuilder) -> asyncio.Future:
        try:
            return await self.producer.send_batch(batch, destination[0], partition=destination[1])
        except KafkaTimeoutError as exc:  # no room in the producer's queue in time: a failed delivery
            failed: asyncio.Future = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            return failed
