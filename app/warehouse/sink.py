"""The warehouse sink: a batch's dimension upserts and its offset ledger in one MySQL transaction.

For a batch of (feed, topic, partition) the sink, inside one transaction
(:func:`~app.warehouse.ledger.land_in_transaction`):

1. locks the ledger row (``SELECT … FOR UPDATE``) and reads ``landed_through``;
2. drops the records at or below it (a replay);
3. upserts the feed's warehouse tables (multi-row ``INSERT … ON DUPLICATE KEY UPDATE``);
4. sets ``landed_through`` to the batch's last offset;
5. commits.

Either all of it is visible or none of it: a crash or a lost connection before
the commit rolls everything back and the batch is replayed. The row lock also
serialises two workers that briefly both believe they own a partition during a
rebalance.
"""

from __future__ import annotations

import aiomysql

from app.core.settings import MySQLSettings
from app.core.sink import Batch, Sink
from app.warehouse.ledger import MySQLLedger, land_in_transaction
from app.warehouse.mysql import MySQLPool
from models.dimensions import DIMENSIONS, latest_rows

__all__ = ["WarehouseSink"]


class WarehouseSink(Sink):
    """Lands batches of feeds that have ``warehouse`` tables into their dimension tables."""

    name = "warehouse"

    def __init__(self, settings: MySQLSettings) -> None:
        self.pool = MySQLPool(settings)
        self.ledger = MySQLLedger(self.pool)

    async def start(self) -> None:
        await self.pool.start()

    async def write(self, batch: Batch) -> int:
        return await land_in_transaction(self.pool, self.ledger, batch, _upsert_dimensions)

    async def probe(self) -> None:
        await self.pool.ping()

    async def stop(self) -> None:
        await self.pool.stop()


async def _upsert_dimensions(cursor: aiomysql.Cursor, pending: Batch) -> int:
    """Upsert the feed's dimension tables from ``pending`` (the latest event per key wins)."""
    for table in pending.feed.warehouse:
        dimension = DIMENSIONS[table]
        rows = latest_rows(dimension, pending.records)
        if rows:
            await cursor.executemany(dimension.upsert_sql, rows)
    return len(pending.records)
