"""``txlake_snapshot_versions``: allocating version numbers and moving a version through its states.

States: ``building`` → ``complete`` (the commit point, in the same transaction as the version's
fact rows) → published in the lake (``published_at`` set) → ``expired`` (retention). A taker that
dies leaves ``building`` behind; recovery turns it into ``failed`` once its lease
(``heartbeat_at``, on the database's clock) is older than the configured lease.

Every function takes a connection with autocommit off and commits its own work unless it says
it runs inside the caller's transaction.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # connections and cursors are the caller's: the module itself needs no driver
    import aiomysql

__all__ = [
    "Trigger",
    "VersionInfo",
    "allocate",
    "clear_path",
    "fetch_version",
    "list_versions",
    "mark_failed",
    "mark_published",
    "renew_lease",
    "taker_identity",
]

Trigger = Literal["schedule", "manual", "export"]

_COLUMNS = (
    "table_name, version, status, triggered_by, trigger_key, snapshot_date, source, source_offsets, row_count, "
    "owner, lake_staging_path, lake_path, created_at, completed_at, published_at, error"
)


@dataclass(frozen=True)
class VersionInfo:
    """One row of ``txlake_snapshot_versions``."""

    table: str
    version: int
    status: str
    triggered_by: str
    trigger_key: str
    snapshot_date: date
    source: dict[str, Any] | None
    source_offsets: dict[str, dict[str, int]] | None
    row_count: int | None
    owner: str
    lake_staging_path: str | None
    lake_path: str | None
    created_at: datetime
    completed_at: datetime | None
    published_at: datetime | None
    error: str | None

    @property
    def published(self) -> bool:
        return self.published_at is not None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (dates as ISO strings; times are UTC)."""
        out = asdict(self)
        for name in ("snapshot_date", "created_at", "completed_at", "published_at"):
            value = out[name]
            out[name] = None if value is None else value.isoformat() + ("Z" if isinstance(value, datetime) else "")
        return out

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> VersionInfo:
        values = list(row)
        for index in (6, 7):
            values[index] = json.loads(values[index]) if values[index] else None
        return cls(*values)


def taker_identity() -> str:
    """``host:pid:nonce`` naming this process as the owner of the versions it builds."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


async def allocate(
    connection: aiomysql.Connection,
    table: str,
    triggered_by: Trigger,
    trigger_key: str,
    snapshot_date: date,
    owner: str,
) -> tuple[VersionInfo, bool]:
    """Reserve the next version of ``table`` for ``trigger_key``; ``(version, created)``.

    Under the table's row lock in ``txlake_snapshot_tables``: if a version with this trigger key
    exists it is returned with ``created=False`` (another worker fired the same schedule);
    otherwise version ``MAX + 1`` is inserted as ``building`` with a fresh lease and a staging path.
    """
    async with connection.cursor() as cursor:
        await connection.begin()
        try:
            await cursor.execute("INSERT INTO txlake_snapshot_tables (table_name) VALUES (%s) ON DUPLICATE KEY UPDATE table_name = table_name", (table,))
            await cursor.execute("SELECT table_name FROM txlake_snapshot_tables WHERE table_name = %s FOR UPDATE", (table,))
            await cursor.fetchall()
            existing = await _select(cursor, "table_name = %s AND trigger_key = %s", (table, trigger_key))
            if existing:
                await connection.commit()
                return existing[0], False
            await cursor.execute(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM txlake_snapshot_versions WHERE table_name = %s", (table,)
            )
            (version,) = await cursor.fetchone()
            staging = f"_txlake/staging/snapshots/{table}/v{version}-{uuid.uuid4().hex[:8]}"
            await cursor.execute(
                "INSERT INTO txlake_snapshot_versions (table_name, version, status, triggered_by, trigger_key, "
                "snapshot_date, owner, lake_staging_path) VALUES (%s, %s, 'building', %s, %s, %s, %s, %s)",
                (table, version, triggered_by, trigger_key, snapshot_date, owner, staging),
            )
            created = await _select(cursor, "table_name = %s AND version = %s", (table, version))
            await connection.commit()
        except BaseException:
            await connection.rollback()
            raise
    return created[0], True


async def renew_lease(connection: aiomysql.Connection, table: str, version: int, owner: str) -> bool:
    """Extend the lease of a building version; False when it is no longer ours (recovery failed it)."""
    async with connection.cursor() as cursor:
        await cursor.execute(
            "UPDATE txlake_snapshot_versions SET heartbeat_at = CURRENT_TIMESTAMP(6) "
            "WHERE table_name = %s AND version = %s AND status = 'building' AND owner = %s",
            (table, version, owner),
        )
        renewed = cursor.rowcount == 1
    await connection.commit()
    return renewed


async def mark_failed(
    connection: aiomysql.Connection, table: str, version: int, error: str, owner: str | None = None
) -> bool:
    """``building`` → ``failed`` (only that transition; ``owner`` restricts it to the taker's own).

    The trigger key gets ``#failed-v<N>`` appended so the same trigger can make a new version.
    """
    condition = "" if owner is None else " AND owner = %s"
    async with connection.cursor() as cursor:
        await cursor.execute(
            "UPDATE txlake_snapshot_versions SET status = 'failed', error = %s, completed_at = CURRENT_TIMESTAMP(6), "
            "trigger_key = LEFT(CONCAT(trigger_key, '#failed-v', version), 255) "
            f"WHERE table_name = %s AND version = %s AND status = 'building'{condition}",
            (error[:4000], table, version, *(() if owner is None else (owner,))),
        )
        changed = cursor.rowcount == 1
    await connection.commit()
    return changed


async def mark_published(connection: aiomysql.Connection, table: str, version: int, lake_path: str) -> None:
    """The version's files are in ``lake_path``; nothing is left in staging."""
    async with connection.cursor() as cursor:
        await cursor.execute(
            "UPDATE txlake_snapshot_versions SET published_at = COALESCE(published_at, CURRENT_TIMESTAMP(6)), "
            "lake_path = %s, lake_staging_path = NULL WHERE table_name = %s AND version = %s",
            (lake_path, table, version),
        )
    await connection.commit()


async def clear_path(connection: aiomysql.Connection, table: str, version: int, column: str) -> None:
    """Forget a lake path (``lake_staging_path`` or ``lake_path``) once its files are removed."""
    if column not in ("lake_staging_path", "lake_path"):  # a check that -O keeps: the name goes into the SQL
        raise ValueError(f"not a lake path column: {column!r}")
    async with connection.cursor() as cursor:
        await cursor.execute(
            f"UPDATE txlake_snapshot_versions SET {column} = NULL WHERE table_name = %s AND version = %s",
            (table, version),
        )
    await connection.commit()


async def fetch_version(connection: aiomysql.Connection, table: str, version: int) -> VersionInfo | None:
    async with connection.cursor() as cursor:
        rows = await _select(cursor, "table_name = %s AND version = %s", (table, version))
    await connection.rollback()
    return rows[0] if rows else None


async def list_versions(
    connection: aiomysql.Connection, table: str | None = None, where: str = "", args: tuple[Any, ...] = ()
) -> list[VersionInfo]:
    """Versions (of ``table``, or all), oldest first; ``where`` adds a condition (trusted SQL)."""
    conditions, params = [], []
    if table is not None:
        conditions.append("table_name = %s")
        params.append(table)
    if where:
        conditions.append(where)
        params.extend(args)
    async with connection.cursor() as cursor:
        rows = await _select(cursor, " AND ".join(conditions) or "TRUE", tuple(params))
    await connection.rollback()
    return rows


async def _select(cursor: aiomysql.Cursor, condition: str, args: tuple[Any, ...]) -> list[VersionInfo]:
    await cursor.execute(
        f"SELECT {_COLUMNS} FROM txlake_snapshot_versions WHERE {condition} ORDER BY table_name, version", args
    )
    return [VersionInfo.from_row(row) for row in await cursor.fetchall()]
