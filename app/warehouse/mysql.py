"""The warehouse connection: one aiomysql pool per sink, sessions set up for txlake.

Every session runs in UTC, with bounded lock waits (``mysql.lock_wait_timeout_s``): a lock held
by another session (LOCK TABLES, a long DDL or backup) fails the batch, which is retried with
backoff, instead of hanging the partition silently for the server's default (a day).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiomysql
import pymysql

from app.core.errors import WarehouseSinkError
from app.core.security import mysql_ssl_context
from app.core.settings import MySQLSettings

__all__ = ["MYSQL_FAILURES", "MySQLPool"]

MYSQL_FAILURES = (pymysql.err.MySQLError, OSError, asyncio.TimeoutError)
"""What a lost or failing MySQL connection raises: transient for every MySQL sink."""


class MySQLPool:
    """A lazily opened pool of autocommit-off connections to the warehouse database."""

    def __init__(self, settings: MySQLSettings) -> None:
        self.settings = settings
        self._pool: aiomysql.Pool | None = None

    async def start(self) -> None:
        """Open the pool (idempotent); raises :class:`WarehouseSinkError` naming the server if unreachable."""
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
    async def connection(self) -> AsyncIterator[aiomysql.Connection]:
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

    async def ping(self) -> None:
        """Raise unless MySQL answers ``SELECT 1``."""
        async with self.connection() as connection, connection.cursor() as cursor:
            await cursor.execute("SELECT 1")
            await cursor.fetchone()

    async def stop(self) -> None:
        """Close every connection; safe to call twice or before :meth:`start`."""
        if self._pool is not None:
            self._pool.close()
            await self._pool.wait_closed()
            self._pool = None
