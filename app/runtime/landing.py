"""Landing one feed's events: decode, dead-letter the bad, write every sink, then let the agent ack.

:meth:`FeedLanding.land` is the whole per-batch contract the agent relies on:
when it returns, every event it was given is either in every sink (up to the
sinks' ledgers) or in the dead-letter topic, so the agent may ack them all.
It never returns early: transient failures are retried with backoff for as
long as it takes (the partition's progress waits, nothing is skipped).

A record that txlake derived itself (a table changelog record carrying
:data:`~models.tables.DERIVED_HEADER`) is never dead-lettered: if it does not
decode, or a sink cannot store one of the batch's values, the partition is
*held* (:mod:`app.runtime.holds`: retried with backoff, an ERROR log line per
attempt, the ``txlake_partition_held`` gauge) instead of skipped. Records from
anyone else that do not decode go to the dead-letter topic as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.structs import ConsumerRecord

from app.core import metrics
from app.core.dead_letters import DeadLetter, DeadLetterPublisher
from app.core.errors import TransientError, UnstorableValueError
from app.core.feeds import Feed
from app.core.retry import Backoff, retry_transient
from app.core.sink import Batch, Sink
from app.runtime.holds import OWN_RECORD_INVALID, VALUE_NOT_STORABLE, PartitionHolds
from models.tables import DERIVED_HEADER, decode_row
from models.transaction import InvalidRecord, decode
from models.wire import fast_decoder

__all__ = ["DECODER_ERROR", "FeedLanding", "Message", "RawMessage", "reason_of"]

logger = logging.getLogger(__name__)

DECODER_ERROR = "decoder_error"
"""The reason label of a value the decoder itself failed on (not an :class:`InvalidRecord`): a bug."""


@dataclass(frozen=True, slots=True)
class RawMessage:
    """What the landing needs of a Kafka message.

    The stream fetcher hands aiokafka's ``ConsumerRecord`` objects as they are (same four
    attributes; building a copy per message cost ~6 % of the worker's GIL time).
    """

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


Message = RawMessage | ConsumerRecord
"""A Kafka message as the landing reads it: ``partition``, ``offset``, ``key``, ``value``, ``headers``."""


def is_derived(message: Message) -> bool:
    """Whether txlake's table agent wrote ``message`` (it carries :data:`~models.tables.DERIVED_HEADER`)."""
    return any(name == DERIVED_HEADER for name, _ in message.headers or ())


def reason_of(error: Exception) -> str:
    """The stable reason label of a decode failure: the record's :class:`Rejection`, or a decoder bug."""
    return error.kind.value if isinstance(error, InvalidRecord) else DECODER_ERROR


class FeedLanding:
    """Lands batches of one feed's messages into its sinks."""

    def __init__(
        self,
        feed: Feed,
        sinks: Sequence[Sink],
        dead_letters: DeadLetterPublisher,
        backoff: Backoff,
    ) -> None:
        self.feed = feed
        self.sinks = tuple(sinks)
        self.dead_letters = dead_letters
        self.backoff = backoff
        self._decode_one = _table_decoder(feed) if feed.is_table else _stream_decoder(feed)
        # Stream records try the model's fast decoder first (models.wire); table records have none.
        self._fast_decode = None if feed.is_table else fast_decoder(feed.record_kind.model)
        self._active = 0  # batches landing right now (retries included)
        self.last_batch_at: float | None = None  # time.monotonic() of the last batch taken
        self.holds = PartitionHolds(feed.name)
        self.written_at: dict[Sink, float] = {}  # time.monotonic() of each sink's last successful write

    async def land(self, messages: Sequence[Message]) -> None:
        """Land ``messages`` (any partitions, offset order within each). See the module docstring."""
        self._active += 1
        self.last_batch_at = time.monotonic()
        try:
            await self._land(messages)
        finally:
            self._active -= 1

    @property
    def busy(self) -> bool:
        """Whether a batch is landing right now (retries included)."""
        return self._active > 0

    async def _land(self, messages: Sequence[Message]) -> None:
        by_partition: dict[int, list[Message]] = defaultdict(list)
        for message in messages:
            by_partition[message.partition].append(message)
        # Partitions have their own ledgers in every sink: land them concurrently, so one
        # partition's I/O waits (fsync, a MySQL commit) overlap with the others'.
        await asyncio.gather(*(self._land_partition(p, group) for p, group in by_partition.items()))

    async def _land_partition(self, partition: int, messages: Sequence[Message]) -> None:
        batch, rejected = self.decode(partition, messages)
        attempt = 0
        while own := self._own_records(messages, rejected):
            attempt += 1
            self.holds.hold(
                partition, OWN_RECORD_INVALID,
                f"{len(own)} record(s) of {batch.describe()} that txlake derived do not decode, "
                f"the first at offset {own[0].offset}: {own[0].message}",
                attempt,
            )
            await asyncio.sleep(self.backoff.delay(attempt - 1))
            batch, rejected = self.decode(partition, messages)
        if rejected:
            for letter in rejected:
                logger.warning(
                    "dead-lettering %s[%d]@%d: %s", letter.topic, partition, letter.offset, letter.message,
                    extra={"feed": self.feed.name, "topic": letter.topic, "partition": partition, "offset": letter.offset},
                )
            await retry_transient(
                lambda: self.dead_letters.publish(rejected),
                what=f"dead-letter publish for {batch.describe()}",
                backoff=self.backoff,
            )
            for letter in rejected:
                metrics.DEAD_LETTERS.labels(self.feed.name, letter.reason).inc()
        metrics.BATCH_RECORDS.labels(self.feed.name).observe(len(batch.records))
        # The sinks are independent (own ledgers): land in parallel.
        await asyncio.gather(*(self._write(sink, batch) for sink in self.sinks))
        self.holds.release(partition)

    def _own_records(self, messages: Sequence[Message], rejected: list[DeadLetter]) -> list[DeadLetter]:
        """The rejected records that txlake derived itself: never dead-lettered, they hold the partition."""
        if not rejected or not self.feed.is_table:
            return []
        derived = {message.offset for message in messages if is_derived(message)}
        return [letter for letter in rejected if letter.offset in derived]

    def decode(self, partition: int, messages: Sequence[Message]) -> tuple[Batch, list[DeadLetter]]:
        """Split messages into a batch of valid records and the would-be dead letters of the rest (no I/O).

        A value goes through the model's fast decoder first (:mod:`models.wire`: upper-case
        names, the common case); whatever that does not accept is decoded by the pydantic
        model, which accepts it or gives the reason it is dead-lettered with.
        """
        decode_one, fast_decode = self._decode_one, self._fast_decode
        records: list[Any] = []
        offsets: list[int] = []
        rejected: list[DeadLetter] = []
        for message in messages:
            if fast_decode is not None and message.value is not None:
                try:
                    records.append(fast_decode(message.value))
                    offsets.append(message.offset)
                    continue
                except Exception:  # noqa: BLE001, S110 - not for the fast path: pydantic decides below
                    pass
            try:
                records.append(decode_one(message))
                offsets.append(message.offset)
            except Exception as exc:  # noqa: BLE001 - every decode failure is terminal for its record only
                reason = reason_of(exc)
                rejected.append(
                    DeadLetter(
                        self.feed.topic,
                        partition,
                        message.offset,
                        message.key,
                        message.value,
                        reason,
                        type(exc).__name__,
                        str(exc),
                    )
                )
        batch = Batch(self.feed, partition, messages[0].offset, messages[-1].offset, records, offsets)
        return batch, rejected

    async def _write(self, sink: Sink, batch: Batch) -> None:
        started = time.perf_counter()
        attempts = 0

        def on_retry(exc: TransientError) -> None:
            nonlocal attempts
            attempts += 1
            metrics.SINK_RETRIES.labels(self.feed.name, sink.name).inc()
            if isinstance(exc, UnstorableValueError):
                self.holds.hold(batch.partition, VALUE_NOT_STORABLE, f"{sink.name} sink: {exc}", attempts)

        landed = await retry_transient(
            lambda: sink.write(batch),
            what=f"{sink.name} write of {batch.describe()}",
            backoff=self.backoff,
            on_retry=on_retry,
        )
        self.written_at[sink] = time.monotonic()
        metrics.SINK_FLUSH_SECONDS.labels(self.feed.name, sink.name).observe(time.perf_counter() - started)
        metrics.RECORDS_LANDED.labels(self.feed.name, sink.name).inc(landed)
        metrics.LEDGER_POSITION.labels(self.feed.name, sink.name, str(batch.partition)).set(batch.last_offset)


def _stream_decoder(feed: Feed) -> Callable[[Message], Any]:
    """Stream records: the value is the record; a null value is invalid."""
    model = feed.record_kind.model

    def decode_stream(message: Message) -> Any:
        if message.value is None:
            raise InvalidRecord("null value (tombstone) on a stream topic")
        return decode(model, message.value)

    return decode_stream


def _table_decoder(feed: Feed) -> Callable[[Message], Any]:
    """Table records: key columns from the key bytes, value or tombstone (:func:`decode_row`)."""
    spec = feed.table_spec

    def decode_table(message: Message) -> Any:
        return decode_row(spec, message.key, message.value)

    return decode_table
