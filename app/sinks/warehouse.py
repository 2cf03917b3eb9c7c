"""The warehouse sink: a batch's dimension upserts and its offset ledger in one MySQL transaction.

For a batch of (feed, topic, partition) the sink, inside one transaction:

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

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiomysql
import pymysql

from app.errors import WarehouseSinkError
from app.security import mysql_ssl_context
from app.settings import MySQLSettings
from app.sinks.base import Batch, Sink
from app.sinks.dimensions import DIMENSIONS, latest_rows

__all__ = ["WarehouseSink"]

logger = logging.getLogger(__name__)

READ_LEDGER = (
    "SELECT landed_through FROM txlake_offset_ledger "
    "WHERE feed = %s AND topic = %s AND kafka_partition = %s FOR UPDATE"
)
WRITE_LEDGER = (
    "INSERT INTO txlake_offset_ledger (feed, topic, kafka_partition, landed_through) VALUES (%s, %s, %s, %s) "
    "ON DUPLICATE KEY UPDATE landed_through = VALUES(landed_through)"
)
MYSQL_FAILURES = (pymysql.err.MySQLError, OSError, asyncio.TimeoutError)
"""What a lost or failing MySQL connection raises: transient for every MySQL sink."""


class WarehouseSink(Sink):
    """Lands batches of feeds that have ``warehouse`` tables into MySQL."""

    name = "warehouse"

    def __init__(self, settings: MySQLSettings) -> None:
        self.settings = settings
        self._pool: aiomysql.Pool | None = None
        self._starting = asyncio.Lock()  # partitions land concurrently: one pool, never one each

    async def start(self) -> None:
        async with self._starting:
            await self._start()

    async def _start(self) -> None:
        if self._pool is not None:
            return
        s = self.settings
        try:
            self._pool = await aiomysql.create_pool(
                host=s.host,
                port=s.port,
                user=s.user,
                password=s.password.get_secret_value(),
                db=s.database,
                minsize=1,
                maxsize=s.pool_size,
                autocommit=False,
                charset="utf8mb4",
                connect_timeout=s.connect_timeout_s,
                init_command=(
                    f"SET time_zone = '+00:00', lock_wait_timeout = {s.lock_wait_timeout_s}, "
                    f"innodb_lock_wait_timeout = {s.lock_wait_timeout_s}"
                ),
                pool_recycle=3600,
                ssl=mysql_ssl_context(s),
            )
        except MYSQL_FAILURES as exc:
            raise WarehouseSinkError(f"cannot connect to MySQL at {s.host}:{s.port}/{s.database}: {exc}") from exc

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[aiomysql.Connection]:
        """A pooled connection; one that saw an error is closed, never handed out again."""
        if self._pool is None:
            await self.start()
        assert self._pool is not None
        async with self._pool.acquire() as connection:
            try:
                yield connection
            except BaseException:
                connection.close()
                raise

    async def write(self, batch: Batch) -> int:
        try:
            async with self._connection() as connection:
                return await self._write_in_transaction(connection, batch)
        except MYSQL_FAILURES as exc:
            raise WarehouseSinkError(f"batch {batch.describe()}: {exc}") from exc

    async def ping(self) -> None:
        """Raise unless MySQL answers ``SELECT 1`` (readiness)."""
        async with self._connection() as connection, connection.cursor() as cursor:
            await cursor.execute("SELECT 1")
            await cursor.fetchone()

    async def landed_through(self, feed: str, topic: str, partition: int) -> int:
        """The ledger position for one partition (-1: nothing landed yet)."""
        async with self._connection() as connection, connection.cursor() as cursor:
            await cursor.execute(READ_LEDGER.replace(" FOR UPDATE", ""), (feed, topic, partition))
            row = await cursor.fetchone()
            await connection.rollback()
        return -1 if row is None else int(row[0])

    async def _write_in_transaction(self, connection: aiomysql.Connection, batch: Batch) -> int:
        key = (batch.feed.name, batch.topic, batch.partition)
        async with connection.cursor() as cursor:
            await connection.begin()
            await cursor.execute(READ_LEDGER, key)
            row = await cursor.fetchone()
            landed = -1 if row is None else int(row[0])
            pending = batch.after(landed)
            if pending.last_offset <= landed:
                await connection.rollback()
                return 0
            landed_records = await self._land(cursor, pending)
            await cursor.execute(WRITE_LEDGER, (*key, pending.last_offset))
            await connection.commit()
        return landed_records

    async def _land(self, cursor: aiomysql.Cursor, pending: Batch) -> int:
        """Write ``pending`` (records above the ledger) inside the open transaction; returns records landed.

        This sink upserts the feed's dimension tables; subclasses write other tables.
        """
        for table in pending.feed.warehouse:
            dimension = DIMENSIONS[table]
            rows = latest_rows(dimension, pending.records)
            if rows:
                await cursor.executemany(dimension.upsert_sql, rows)
        return len(pending.records)

    async def stop(self) -> None:
        if self._pool is not None:
            self._pool.close()
            await self._pool.wait_closed()
            self._pool = None
