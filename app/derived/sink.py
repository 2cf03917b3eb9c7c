"""The derived-stream sink: the transaction feed's derived streams, written exactly once with Kafka transactions.

A sink of the feed the derived streams come from (the transaction stream), beside the lake, the
warehouse and the delta sink. For each batch of one source partition it writes, in **one Kafka
transaction**, every message :class:`models.derived_messages.DerivedMessages` derives from the
batch's transactions (to the topics of the ``flatten``/``anonymize``/``blacklist`` feeds, in
ksqlDB's key and value format, at Kafka's default partition of the key) **and the position**:
the source offset after the batch, committed for the consumer group
``<group_id>-derived-streams`` with ``send_offsets_to_transaction``. The records and the position
become visible together or not at all; that is the whole exactly-once argument, Kafka Streams'
own (KIP-98/129):

* A crash before the commit leaves an open transaction: its records are never delivered to a
  ``read_committed`` consumer, the position did not move, and the batch is derived again. The
  next owner of the partition aborts the open transaction when it opens its producer (below),
  or the broker does after ``streams.transaction_timeout_ms``.
* A crash after the commit: records and position are both there; the replay skips every offset
  at or below the position.
* **Fencing.** Each source partition has its own transactional id,
  ``<group_id>-derived-streams-<topic>-<partition>`` (one producer per partition, as Kafka Streams
  did before KIP-447; aiokafka cannot send the consumer-group metadata KIP-447 fencing needs).
  :meth:`DerivedStreamSink.position` -- called when this worker takes a partition over -- first
  opens that producer (``InitProducerId``: the broker bumps the epoch, aborts or completes the
  previous owner's open transaction and fences its producer), *then* reads the committed
  position. A zombie that still holds the old producer fails with ``ProducerFenced`` at its next
  transactional call; its batch is aborted, and its retry re-opens the producer, re-reads the
  position and skips what the new owner derived. Every transaction derives exactly the offsets
  above a position read after its producer's epoch began, so no offset is derived twice, and
  none is skipped: the position only moves by a commit that carries the records below it.

Consumers of the derived topics must read with ``isolation_level=read_committed`` (the worker's
fetcher, ``txlake verify`` and ``progress`` do); a ``read_uncommitted`` consumer also sees aborted
records. Offsets of the derived topics are not dense: each commit writes a control record.

What differs from ksqlDB on the wire: the Kafka timestamp is the event time (ksqlDB's ROWTIME) but
never later than the wall clock (Kafka 4 brokers refuse timestamps more than
``log.message.timestamp.after.max.ms`` ahead: a future-dated event would block its partition),
and every message carries a ``txlake.source`` header, ``<topic>/<partition>/<offset>`` of the
transaction it was derived from (lineage; ksqlDB writes no headers).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from app.core import metrics
from app.core.crash_points import crash_point
from app.core.errors import DerivedStreamError
from app.core.sink import Batch, Sink
from app.derived.ledger import DerivedStreamLedger
from models.derived_messages import DerivedMessages

if TYPE_CHECKING:
    from app.core.feeds import Feed

__all__ = ["SOURCE_HEADER", "DerivedStreamSink"]

logger = logging.getLogger(__name__)

SOURCE_HEADER = "txlake.source"
"""Header of every derived message: ``<source topic>/<partition>/<offset>`` it was derived from."""

_KAFKA_FAILURES = (KafkaError, OSError, asyncio.TimeoutError)
_MAX_BATCH_BYTES = 256 * 1024  # record batch per output partition (the broker takes 1 MiB requests)
_STOP_TIMEOUT_S = 10.0


@dataclass(eq=False)
class _Lane:
    """One source partition's transactional producer and the position it committed."""

    producer: AIOKafkaProducer
    position: int
    committed_at: float  # time.monotonic() of the last commit (or of the position read)


class DerivedStreamSink(Sink):
    """Writes the derived streams of a transaction feed, exactly once (see the module docstring)."""

    name = "derived_streams"

    def __init__(
        self,
        client_options: Mapping[str, Any],
        group_id: str,
        outputs: Mapping[str, str],
        messages: DerivedMessages,
        *,
        transaction_timeout_ms: int = 60_000,
        position_refresh_s: float = 3600.0,
    ) -> None:
        """``outputs`` maps each derivation (``flatten``, ...) to its topic; ``group_id`` holds the position."""
        self.client_options = dict(client_options)  # app.core.security.kafka_client_options
        self.group_id = group_id
        self.outputs = dict(outputs)
        self.messages = messages
        self.transaction_timeout_ms = transaction_timeout_ms
        self.position_refresh_s = position_refresh_s
        self.ledger = DerivedStreamLedger(client_options, group_id)
        self._lanes: dict[tuple[str, int], _Lane] = {}
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._refresher: asyncio.Task[None] | None = None
        self._derived = {derivation: metrics.DERIVED_RECORDS.labels(derivation) for derivation in self.outputs}

    def transactional_id(self, topic: str, partition: int) -> str:
        """The transactional id of a source partition: the same on every worker, so owners fence each other."""
        return f"{self.group_id}-{topic}-{partition}"

    # -- the sink contract ----------------------------------------------------------------

    async def start(self) -> None:
        if self._refresher is None:
            self._refresher = asyncio.create_task(self._refresh_positions())

    async def position(self, feed: Feed, partition: int) -> int:
        """Fence every other producer of the partition, then read the committed position (-1: none)."""
        key = (feed.topic, partition)
        async with self._lock(key):
            return (await self._open(*key)).position

    async def write(self, batch: Batch) -> int:
        """Derive the batch's records above the position and commit them with the new position.

        Returns the number of source records derived. Raises :class:`DerivedStreamError` when
        Kafka failed (the transaction is aborted, the producer dropped; the retry re-opens it and
        re-reads the position).
        """
        key = (batch.topic, batch.partition)
        async with self._lock(key):
            lane = self._lanes.get(key) or await self._open(*key)
            pending = batch.after(lane.position)
            if pending.last_offset <= lane.position:
                return 0
            try:
                counts = await self._transact(lane, pending)
            except BaseException as exc:
                await self._drop(key, lane)
                if isinstance(exc, _KAFKA_FAILURES):
                    raise DerivedStreamError(f"derived streams of {pending.describe()}: {exc!r}") from exc
                raise
            lane.position = pending.last_offset
            lane.committed_at = time.monotonic()
        for derivation, count in counts.items():
            self._derived[derivation].inc(count)
        return len(pending.records)

    async def probe(self) -> None:
        """Raise unless the broker answers for the position's group (readiness)."""
        await self.ledger.ping()

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
            self._refresher = None
        lanes, self._lanes = self._lanes, {}
        await asyncio.gather(*(self._close(lane) for lane in lanes.values()))
        await self.ledger.close()

    # -- transactions -----------------------------------------------------------------------

    async def _transact(self, lane: _Lane, batch: Batch) -> dict[str, int]:
        """One Kafka transaction: the batch's derived messages, then its position; commit."""
        producer, outputs, derive = lane.producer, self.outputs, self.messages
        await producer.begin_transaction()
        partitions = {topic: len(await producer.partitions_for(topic)) for topic in set(outputs.values())}
        now_ms = int(time.time() * 1000)
        source = f"{batch.topic}/{batch.partition}/"
        open_batches: dict[tuple[str, int], Any] = {}
        sends: list[asyncio.Future[Any]] = []
        counts = dict.fromkeys(outputs, 0)
        for tx, offset in zip(batch.records, batch.offsets, strict=True):
            values = derive.values(tx)
            if not values:
                continue
            key = derive.key(tx)
            slot = murmur2(key) & 0x7FFFFFFF
            timestamp = min(derive.timestamp_ms(tx), now_ms)
            headers = [(SOURCE_HEADER, f"{source}{offset}".encode())]
            for derivation, value in values:
                topic = outputs[derivation]
                where = (topic, slot % partitions[topic])
                builder = open_batches.get(where)
                if builder is None:
                    builder = open_batches[where] = producer.create_batch()
                if builder.append(key=key, value=value, timestamp=timestamp, headers=headers) is None:
                    sends.append(await producer.send_batch(builder, topic, partition=where[1]))
                    builder = open_batches[where] = producer.create_batch()
                    builder.append(key=key, value=value, timestamp=timestamp, headers=headers)
                counts[derivation] += 1
        for (topic, partition), builder in open_batches.items():
            sends.append(await producer.send_batch(builder, topic, partition=partition))
        await asyncio.gather(*sends)
        crash_point("derived_streams.sent")
        await producer.send_offsets_to_transaction(
            {TopicPartition(batch.topic, batch.partition): batch.last_offset + 1}, self.group_id
        )
        crash_point("derived_streams.before_commit")
        await producer.commit_transaction()
        return counts

    async def _open(self, topic: str, partition: int) -> _Lane:
        """A fresh producer for the partition (fencing the previous one), and the position read after it."""
        key = (topic, partition)
        old = self._lanes.pop(key, None)
        if old is not None:
            await self._close(old)
        producer = AIOKafkaProducer(
            **self.client_options,
            transactional_id=self.transactional_id(topic, partition),
            enable_idempotence=True,
            acks="all",
            transaction_timeout_ms=self.transaction_timeout_ms,
            max_batch_size=_MAX_BATCH_BYTES,
            linger_ms=5,
        )
        try:
            await producer.start()  # InitProducerId: fences the previous owner, ends its open transaction
            position = (await self.ledger.read_many(topic, [partition]))[partition]
        except BaseException as exc:
            await self._close(_Lane(producer, -1, 0.0))
            if isinstance(exc, _KAFKA_FAILURES):
                raise DerivedStreamError(f"derived streams of {topic}[{partition}]: cannot open the producer: {exc!r}") from exc
            raise
        lane = self._lanes[key] = _Lane(producer, position, time.monotonic())
        logger.info("derived streams: %s[%d] derived through %d", topic, partition, position)
        return lane

    async def _drop(self, key: tuple[str, int], lane: _Lane) -> None:
        if self._lanes.get(key) is lane:
            del self._lanes[key]
        await self._close(lane)

    @staticmethod
    async def _close(lane: _Lane) -> None:
        """Stop a producer; an open transaction is left to its successor's fencing (or the timeout)."""
        try:
            await asyncio.wait_for(lane.producer.stop(), _STOP_TIMEOUT_S)
        except BaseException as exc:  # noqa: BLE001 - a failed or fenced producer: nothing left to save
            if isinstance(exc, asyncio.CancelledError):
                raise
            logger.debug("derived streams: stopping a producer: %r", exc)

    def _lock(self, key: tuple[str, int]) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    # -- keeping the position alive -----------------------------------------------------------

    async def _refresh_positions(self) -> None:
        """Re-commit the position of partitions idle for ``position_refresh_s`` (offsets of a group
        without members expire ``offsets.retention.minutes`` after their last commit)."""
        while True:
            await asyncio.sleep(min(self.position_refresh_s / 4, 300.0))
            for key, lane in list(self._lanes.items()):
                lock = self._lock(key)
                if lane.position < 0 or lock.locked() or time.monotonic() - lane.committed_at < self.position_refresh_s:
                    continue
                async with lock:
                    if self._lanes.get(key) is not lane:
                        continue
                    try:
                        await lane.producer.begin_transaction()
                        await lane.producer.send_offsets_to_transaction(
                            {TopicPartition(*key): lane.position + 1}, self.group_id
                        )
                        await lane.producer.commit_transaction()
                        lane.committed_at = time.monotonic()
                    except _KAFKA_FAILURES as exc:
                        # Fenced (the partition moved on) or the broker is away: the next write re-opens.
                        logger.info("derived streams: refreshing the position of %s[%d]: %r", *key, exc)
                        await self._drop(key, lane)
