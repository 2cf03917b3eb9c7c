"""Retention: keep the newest N complete versions of each table; older ones expire.

Expiring a version is one MySQL transaction (``status = 'expired'`` and ``DELETE`` of its fact
rows), then the lake directory is removed, ``lake_path`` cleared and the catalog rewritten. A crash in between leaves an
expired row with ``lake_path`` set; recovery removes the directory then.
"""

from __future__ import annotations

import asyncio
import logging

import aiomysql

from app.core.metrics import SNAPSHOT_VERSIONS
from app.lake.files import remove_tree
from app.lake.storage import LakeStorage
from app.snapshots.publish import refresh_catalog
from app.snapshots.registry import VersionInfo, clear_path, list_versions
from models.tables import TableSpec

__all__ = ["expire_old_versions", "remove_expired_files"]

logger = logging.getLogger(__name__)


async def expire_old_versions(
    connection: aiomysql.Connection, storage: LakeStorage, spec: TableSpec, keep: int
) -> list[int]:
    """Expire every complete version of ``spec`` older than the newest ``keep``; returns their numbers."""
    complete = await list_versions(connection, spec.name, "status = 'complete'")
    expired = []
    for info in complete[: max(len(complete) - keep, 0)]:
        async with connection.cursor() as cursor:
            await connection.begin()
            await cursor.execute(
                "UPDATE txlake_snapshot_versions SET status = 'expired' "
                "WHERE table_name = %s AND version = %s AND status = 'complete'",
                (spec.name, info.version),
            )
            if cursor.rowcount != 1:  # another worker expired it first
                await connection.rollback()
                continue
            await cursor.execute(f"DELETE FROM {spec.fact_table} WHERE snapshot_version = %s", (info.version,))
            await connection.commit()
        SNAPSHOT_VERSIONS.labels(spec.name, "expired").inc()
        logger.info("%s v%d expired (retention keeps %d)", spec.name, info.version, keep)
        expired.append(info.version)
    leftovers = await list_versions(connection, spec.name, "status = 'expired' AND lake_path IS NOT NULL")
    for info in leftovers:
        await remove_expired_files(connection, storage, info)
    if expired or leftovers:
        await refresh_catalog(connection, storage, spec)
    return expired


async def remove_expired_files(connection: aiomysql.Connection, storage: LakeStorage, info: VersionInfo) -> None:
    """Remove an expired version's lake directory and forget its path."""
    if info.lake_path:
        await asyncio.to_thread(remove_tree, storage, info.lake_path)
    await clear_path(connection, info.table, info.version, "lake_path")
