"""Connections to the warehouse for snapshot work (one per task; sessions run in UTC)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime

import aiomysql

from app.core.settings import MySQLSettings

__all__ = ["DatabaseClock", "connect"]


@contextlib.asynccontextmanager
async def connect(settings: MySQLSettings, *, unbuffered: bool = False) -> AsyncIterator[aiomysql.Connection]:
    """An autocommit-off connection as the application user; ``unbuffered`` streams result sets."""
    connection = await aiomysql.connect(
        host=settings.host,
        port=settings.port,
        user=settings.user,
        password=settings.password.get_secret_value(),
        db=settings.database,
        autocommit=False,
        charset="utf8mb4",
        connect_timeout=settings.connect_timeout_s,
        init_command="SET time_zone = '+00:00'",
        cursorclass=aiomysql.SSCursor if unbuffered else aiomysql.Cursor,
    )
    try:
        yield connection
    finally:
        connection.close()


class DatabaseClock:
    """The clock snapshot leases are judged by: the database's, so the workers' own clocks never matter.

    A lease (``heartbeat_at``) is renewed with the database's ``CURRENT_TIMESTAMP(6)``; recovery
    asks this clock what time it is now. Tests pass a subclass that runs ahead instead of sleeping.
    """

    async def now(self, connection: aiomysql.Connection) -> datetime:
        """The database's current time (UTC, naive, microseconds)."""
        async with connection.cursor() as cursor:
            await cursor.execute("SELECT CURRENT_TIMESTAMP(6)")
            (now,) = await cursor.fetchone()
        return now
