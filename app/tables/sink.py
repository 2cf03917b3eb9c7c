"""The delta sink: the transaction stream's contributions to the four tables, sent to the deltas topic.

A sink like the lake and the warehouse, on the transaction feed: for each batch it sends the
batch's delta messages (:mod:`app.tables.deltas`) with an idempotent producer, waits for every
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

from app.core.errors import TransientError, WarehouseSinkError
from app.core.settings import MySQLSettings
from app.core.sink import Batch, Sink
from app.tables.deltas import delta_messages
from app.warehouse.ledger import MySQLLedger
from app.warehouse.mysql import MYSQL_FAILURES, MySQLPool

__all__ = ["DELTAS_LEDGER", "DeltaSink"]

DELTAS_LEDGER = "deltas"
"""The suffix of the delta sink's ledger rows: ``<feed>:deltas``."""


class DeltaSink(Sink):
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
        self.pool = MySQLPool(mysql)
        self.ledger = MySQLLedger(self.pool, DELTAS_LEDGER)
        self.client_options = client_options  # app.core.security.kafka_client_options
        self.topic = topic
        self.partitions = partitions
        self.rates = rates
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        await self.pool.start()
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
        landed = await self.ledger.read(batch.feed, batch.partition)
        pending = batch.after(landed)
        if pending.last_offset <= landed:
            return 0
        if pending.records:
            await self._send(pending)
        try:
            async with self.pool.connection() as connection, connection.cursor() as cursor:
                await connection.begin()
                await self.ledger.advance(cursor, batch.feed, batch.partition, pending.last_offset)
                await connection.commit()
        except MYSQL_FAILURES as exc:
            raise WarehouseSinkError(f"delta ledger of {batch.describe()}: {exc}") from exc
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

    async def probe(self) -> None:
        await self.pool.ping()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        await self.pool.stop()
