"""The delta sink: the transaction stream's contributions to the four tables, sent to the deltas topic.

A sink like the lake and the warehouse, on the transaction feed: for each batch it sends the
batch's delta messages (:mod:`app.table_deltas`) with an idempotent producer, waits for every
acknowledgement, then advances its own ledger row in MySQL (``feed = "<feed>:deltas"``). A crash
between the two re-sends the batch's deltas on replay; that is harmless because every key's state
skips contributions at or below its watermark (:mod:`models.aggregates`). The ledger only spares
the re-sending and tells the fetcher where to resume.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from aiokafka import AIOKafkaProducer

from app.errors import TransientError, WarehouseSinkError
from app.settings import MySQLSettings
from app.sinks.base import Batch
from app.sinks.warehouse import MYSQL_FAILURES, WRITE_LEDGER, WarehouseSink
from app.table_deltas import delta_messages

__all__ = ["DeltaSink", "ledger_feed"]


def ledger_feed(feed_name: str) -> str:
    """The ledger row name of the delta sink for a feed."""
    return f"{feed_name}:deltas"


class DeltaSink(WarehouseSink):
    """Sends a transaction feed's contributions to the deltas topic, at least once, ledgered."""

    name = "deltas"

    def __init__(
        self,
        mysql: MySQLSettings,
        client_options: dict[str, Any],
        topic: str,
        partitions: int,
        rates: Mapping[str, Decimal],
    ) -> None:
        super().__init__(mysql)
        self.client_options = client_options  # app.security.kafka_client_options
        self.topic = topic
        self.partitions = partitions
        self.rates = rates
        self._producer: AIOKafkaProducer | None = None

    async def _start(self) -> None:
        await super()._start()
        if self._producer is None:
            producer = AIOKafkaProducer(
                **self.client_options,
                acks="all",
                enable_idempotence=True,  # in-order, no duplicates from the producer's own retries
                linger_ms=5,
            )
            await producer.start()
            self._producer = producer

    async def write(self, batch: Batch) -> int:
        try:
            return await self._write(batch)
        except MYSQL_FAILURES as exc:
            raise WarehouseSinkError(f"delta ledger of {batch.describe()}: {exc}") from exc

    async def _write(self, batch: Batch) -> int:
        feed = ledger_feed(batch.feed.name)
        landed = await self.landed_through(feed, batch.topic, batch.partition)
        pending = batch.after(landed)
        if pending.last_offset <= landed:
            return 0
        if pending.records:
            await self._send(pending)
        async with self._connection() as connection, connection.cursor() as cursor:
            await connection.begin()
            await cursor.execute(WRITE_LEDGER, (feed, batch.topic, batch.partition, pending.last_offset))
            await connection.commit()
        return len(pending.records)

    async def _send(self, batch: Batch) -> None:
        if self._producer is None:
            await self.start()
        assert self._producer is not None
        try:
            futures = [
                await self._producer.send(self.topic, value, partition=target)
                for target, value in delta_messages(batch.records, batch.offsets, batch.partition, self.rates, self.partitions)
            ]
            await asyncio.gather(*futures)
        except Exception as exc:  # aiokafka's KafkaError family and timeouts
            raise TransientError(f"delta send for {batch.describe()} failed: {exc}") from exc

    async def held_through(self, feed_name: str, topic: str, partition: int) -> int:
        """The ledger position of the feed's deltas for one partition (-1: nothing sent yet)."""
        return await self.landed_through(ledger_feed(feed_name), topic, partition)

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        await super().stop()

