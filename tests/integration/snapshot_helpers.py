"""Helpers for the snapshot tests: settings for a test warehouse and lake, live rows written like the table feeds."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiomysql

from app.core.settings import Settings
from app.snapshots.db import DatabaseClock

__all__ = ["fetchall", "live_settings", "write_live"]


def live_settings(warehouse_db: Any, lake: Path, **snapshots: Any) -> Settings:
    """Settings pointing at the per-test database and a lake directory (no fsync: tmpfs speed)."""
    return Settings(
        mysql={
            "host": warehouse_db.host,
            "port": warehouse_db.port,
            "user": warehouse_db.user,
            "password": warehouse_db.password,
            "database": warehouse_db.database,
        },
        lake={"root": str(lake), "fsync": False},
        snapshots=snapshots,
    )


async def fetchall(conn: aiomysql.Connection, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    async with conn.cursor() as cur:
        await cur.execute(sql, args)
        rows = await cur.fetchall()
    await conn.commit()
    return list(rows)


async def write_live(
    conn: aiomysql.Connection, rows: list[tuple[str, str, Decimal, int]], offsets: dict[int, int]
) -> None:
    """Upsert live ``user_transaction_summary`` rows and the feed's ledger in ONE transaction (as the live sink does).

    rows: (user_id, transaction_type, total_amount, transaction_count); offsets: partition -> landed_through.
    """
    async with conn.cursor() as cur:
        await conn.begin()
        users = sorted({r[0] for r in rows})
        if users:
            await cur.executemany("INSERT INTO dim_users (user_id, is_inferred) VALUES (%s, TRUE) ON DUPLICATE KEY UPDATE user_id = user_id", [(u,) for u in users])
        if rows:
            await cur.executemany(
                "INSERT INTO fact_user_transaction_summary (user_id, transaction_type, total_amount, "
                "transaction_count, avg_amount, snapshot_version) VALUES (%s, %s, %s, %s, %s, 0) "
                "ON DUPLICATE KEY UPDATE total_amount = VALUES(total_amount), "
                "transaction_count = VALUES(transaction_count), avg_amount = VALUES(avg_amount)",
                [(u, t, amount, count, (amount / count).quantize(Decimal("0.0001"))) for u, t, amount, count in rows],
            )
        for partition, landed in offsets.items():
            await cur.execute(
                "INSERT INTO txlake_offset_ledger (feed, topic, kafka_partition, landed_through) "
                "VALUES ('user_transaction_summary', 'USER_TRANSACTION_SUMMARY', %s, %s) "
                "ON DUPLICATE KEY UPDATE landed_through = VALUES(landed_through)",
                (partition, landed),
            )
        await conn.commit()


class DatabaseClockAhead(DatabaseClock):
    """The database's clock, run ``seconds`` ahead: leases end without the test sleeping."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def now(self, connection):
        return await super().now(connection) + timedelta(seconds=self.seconds)
