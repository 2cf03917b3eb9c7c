"""The MySQL offset ledger: ``txlake_offset_ledger``, one row per (ledger name, topic, partition).

A MySQL sink advances its row inside the same transaction as the data it lands
(:func:`land_in_transaction`), so the data and the position commit together or not at all. The
row lock taken at the start of that transaction (``SELECT … FOR UPDATE``) also serialises two
workers that briefly both believe they own a partition during a rebalance.

Ledger names: a feed's own name for the warehouse and fact sinks (they never share a feed),
``<feed>:<suffix>`` for sinks that keep a second position on the same feed (the delta sink's
``<feed>:deltas``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiomysql

from app.core.errors import WarehouseSinkError
from app.core.feeds import Feed
from app.core.sink import NOTHING_HELD, Batch
from app.warehouse.mysql import MYSQL_FAILURES, MySQLPool

__all__ = ["MySQLLedger", "land_in_transaction"]

_READ = "SELECT landed_through FROM txlake_offset_ledger WHERE feed = %s AND topic = %s AND kafka_partition = %s"
_WRITE = (
    "INSERT INTO txlake_offset_ledger (feed, topic, kafka_partition, landed_through) VALUES (%s, %s, %s, %s) "
    "ON DUPLICATE KEY UPDATE landed_through = VALUES(landed_through)"
)

Land = Callable[[aiomysql.Cursor, Batch], Awaitable[int]]
"""Writes a batch's records (those above the ledger) inside the open transaction; returns how many landed."""


class MySQLLedger:
    """Positions in ``txlake_offset_ledger`` under the name ``<feed>`` or ``<feed>:<suffix>``."""

    def __init__(self, pool: MySQLPool, suffix: str = "") -> None:
        self.pool = pool
        self.suffix = suffix

    def name(self, feed: Feed) -> str:
        """The ledger row's ``feed`` column for ``feed``."""
        return f"{feed.name}:{self.suffix}" if self.suffix else feed.name

    async def read(self, feed: Feed, partition: int) -> int:
        try:
            async with self.pool.connection() as connection, connection.cursor() as cursor:
                await cursor.execute(_READ, (self.name(feed), feed.topic, partition))
                row = await cursor.fetchone()
                await connection.rollback()
        except MYSQL_FAILURES as exc:
            raise WarehouseSinkError(f"reading the ledger of {feed.topic}[{partition}]: {exc}") from exc
        return NOTHING_HELD if row is None else int(row[0])

    async def lock(self, cursor: aiomysql.Cursor, feed: Feed, partition: int) -> int:
        """The position, row-locked until the open transaction ends."""
        await cursor.execute(_READ + " FOR UPDATE", (self.name(feed), feed.topic, partition))
        row = await cursor.fetchone()
        return NOTHING_HELD if row is None else int(row[0])

    async def advance(self, cursor: aiomysql.Cursor, feed: Feed, partition: int, offset: int) -> None:
        """Set the position inside the open transaction (committed with it)."""
        await cursor.execute(_WRITE, (self.name(feed), feed.topic, partition, offset))


async def land_in_transaction(pool: MySQLPool, ledger: MySQLLedger, batch: Batch, land: Land) -> int:
    """One MySQL transaction: lock the ledger row, ``land`` what is above it, advance it, commit.

    Either all of it is visible or none of it: a failure before the commit rolls everything back
    (the pool closes the connection) and raises :class:`WarehouseSinkError`; the caller retries.
    """
    try:
        async with pool.connection() as connection, connection.cursor() as cursor:
            await connection.begin()
            held = await ledger.lock(cursor, batch.feed, batch.partition)
            pending = batch.after(held)
            if pending.last_offset <= held:
                await connection.rollback()
                return 0
            landed = await land(cursor, pending)
            await ledger.advance(cursor, batch.feed, batch.partition, pending.last_offset)
            await connection.commit()
            return landed
    except MYSQL_FAILURES as exc:
        raise WarehouseSinkError(f"batch {batch.describe()}: {exc}") from exc
