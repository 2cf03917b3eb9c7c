"""Publishing a complete version in the lake: ``tables/<table>/version=v<N>/``, catalog, ``_latest``.

Runs after the commit point, so it only ever rolls forward: the staged files are moved into the
version directory (one atomic rename locally; object by object on S3), or -- when the staging
is gone -- rebuilt from the warehouse's rows of version N. Then ``published_at`` is set and the
catalog document and the ``_latest`` pointer are rewritten from the version rows.
"""

from __future__ import annotations

import asyncio
import logging

import aiomysql

from app.core.settings import Settings
from app.lake.catalog import catalog_is_current, version_dir, write_table_catalog
from app.lake.files import list_tree, move_tree, remove_tree
from app.lake.storage import LakeStorage
from app.snapshots.db import connect
from app.snapshots.files import VersionFileWriter
from app.snapshots.registry import VersionInfo, list_versions, mark_published
from app.snapshots.sources import rows_to_batch
from app.snapshots.tables import table_spec
from models.tables import TableSpec

__all__ = ["publish_version", "refresh_catalog"]

logger = logging.getLogger(__name__)


async def publish_version(
    connection: aiomysql.Connection, settings: Settings, storage: LakeStorage, info: VersionInfo
) -> None:
    """Make complete version ``info`` readable in the lake (idempotent; safe to replay after a crash)."""
    spec = table_spec(info.table)
    target = version_dir(info.table, info.version)
    staging = info.lake_staging_path
    published = await asyncio.to_thread(list_tree, storage, target)
    if staging and (not storage.local or not published):
        await asyncio.to_thread(move_tree, storage, staging, target)
        published = await asyncio.to_thread(list_tree, storage, target)
    if not published:
        logger.warning("%s v%d: staged files gone, rebuilding them from the warehouse", info.table, info.version)
        await _rebuild_from_warehouse(settings, storage, spec, info, target)
    if staging:
        await asyncio.to_thread(remove_tree, storage, staging)
    await mark_published(connection, info.table, info.version, target)
    await refresh_catalog(connection, storage, spec)


async def refresh_catalog(
    connection: aiomysql.Connection, storage: LakeStorage, spec: TableSpec, *, only_if_stale: bool = False
) -> None:
    """Rewrite the table's catalog document and ``_latest`` pointer from ``txlake_snapshot_versions``.

    ``only_if_stale``: skip the rewrite (and its listings) when the stored catalog already shows
    the same version states -- the periodic pass uses it to heal a catalog a crash or a race left
    behind without rewriting every table every minute.
    """
    versions = await list_versions(connection, spec.name)
    if only_if_stale and await asyncio.to_thread(catalog_is_current, storage, spec.name, versions):
        return
    await asyncio.to_thread(write_table_catalog, storage, spec.name, spec.arrow_schema, versions)


async def _rebuild_from_warehouse(
    settings: Settings, storage: LakeStorage, spec: TableSpec, info: VersionInfo, target: str
) -> None:
    rebuild = f"{target.replace('tables/', '_txlake/staging/rebuild/', 1)}"
    await asyncio.to_thread(remove_tree, storage, rebuild)
    writer = VersionFileWriter(
        storage,
        rebuild,
        spec.arrow_schema,
        compression=settings.lake.compression,
        rows_per_file=settings.snapshots.rows_per_file,
        row_group_rows=settings.snapshots.row_group_rows,
    )
    async with connect(settings.mysql, unbuffered=True) as connection, connection.cursor() as cursor:
        await cursor.execute(
            f"SELECT {', '.join(spec.columns)} FROM {spec.fact_table} WHERE snapshot_version = %s "
            f"ORDER BY {', '.join(spec.key_columns)}",
            (info.version,),
        )
        while rows := await cursor.fetchmany(settings.snapshots.row_group_rows):
            await writer.write(rows_to_batch(spec, rows))
    await writer.close()
    await asyncio.to_thread(move_tree, storage, rebuild, target)
