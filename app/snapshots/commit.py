"""The commit point of a version: its fact rows and ``status = 'complete'`` in ONE MySQL transaction.

The rows are read back from the staged Parquet files, so the warehouse and the lake hold the same
rows. Before the facts of each chunk go in, every referenced dimension member that is missing is
inserted as an inferred placeholder (``INSERT IGNORE … is_inferred = TRUE``, Kimball's
late-arriving dimension) -- a version never fails on a foreign key.

A crash or a lost connection before ``COMMIT`` rolls all of it back: readers never see a partial
version. If recovery failed the version meanwhile (lease expired), :class:`VersionLost` is raised
and nothing is written.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aiomysql
import pyarrow as pa

from app.lake.storage import LakeStorage
from app.snapshots.errors import VersionLost
from app.snapshots.files import read_batches
from app.snapshots.registry import VersionInfo
from models.tables import TableSpec

__all__ = ["commit_version", "insert_inferred_members"]

_DONE = object()


async def commit_version(
    connection: aiomysql.Connection,
    spec: TableSpec,
    info: VersionInfo,
    storage: LakeStorage,
    *,
    source: dict[str, Any],
    offsets: dict[str, dict[str, int]] | None,
    batch_rows: int,
) -> int:
    """Insert the staged rows as version ``info.version`` and mark it complete; returns the row count."""
    columns = (*spec.columns, "snapshot_date", "snapshot_version")
    insert = (
        f"INSERT INTO {spec.fact_table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"
    )
    staged: Iterator[pa.RecordBatch] = read_batches(storage, info.lake_staging_path or "", batch_rows)
    count = 0
    async with connection.cursor() as cursor:
        await connection.begin()
        try:
            await cursor.execute(
                "SELECT status, owner FROM txlake_snapshot_versions WHERE table_name = %s AND version = %s FOR UPDATE",
                (spec.name, info.version),
            )
            row = await cursor.fetchone()
            if row is None or row[0] != "building" or row[1] != info.owner:
                raise VersionLost(f"{spec.name} v{info.version} is no longer building under {info.owner}: {row}")
            while (batch := await asyncio.to_thread(next, staged, _DONE)) is not _DONE:
                values = [column.to_pylist() for column in batch.columns]
                await insert_inferred_members(cursor, spec, batch)
                rows = [(*r, info.snapshot_date, info.version) for r in zip(*values, strict=True)]
                if rows:
                    await cursor.executemany(insert, rows)
                count += len(rows)
            await cursor.execute(
                "UPDATE txlake_snapshot_versions SET status = 'complete', completed_at = CURRENT_TIMESTAMP(6), "
                "row_count = %s, source = %s, source_offsets = %s WHERE table_name = %s AND version = %s",
                (count, json.dumps(source), None if offsets is None else json.dumps(offsets), spec.name, info.version),
            )
            await connection.commit()
        except BaseException:
            await connection.rollback()
            raise
    return count


async def insert_inferred_members(cursor: aiomysql.Cursor, spec: TableSpec, batch: pa.RecordBatch) -> None:
    """Placeholder dimension rows for the members ``batch`` references that do not exist yet."""
    ref = spec.dimension
    if ref is None:
        return
    keys = sorted({key for key in batch.column(ref.column).to_pylist() if key is not None})
    if not keys:
        return
    await cursor.execute(
        f"SELECT {ref.column} FROM {ref.table} WHERE {ref.column} IN ({', '.join(['%s'] * len(keys))})", keys
    )
    known = {row[0] for row in await cursor.fetchall()}
    missing = [(key,) for key in keys if key not in known]
    if missing:
        # IGNORE: a member inserted meanwhile by the dimension upsert wins (and is not a placeholder).
        await cursor.executemany(f"INSERT IGNORE INTO {ref.table} ({ref.column}, is_inferred) VALUES (%s, TRUE)", missing)
