"""Query results into Parquet as they arrive: one row group per record batch, constant memory."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["ParquetProgress", "write_parquet"]


@dataclass
class ParquetProgress:
    """Rows and row groups written so far, and the file's size in bytes."""

    rows: int = 0
    row_groups: int = 0
    bytes: int = 0


async def write_parquet(
    batches: AsyncIterator[pa.RecordBatch],
    path: Path | str,
    schema: pa.Schema,
    *,
    compression: str | None = "snappy",
    on_progress: Callable[[ParquetProgress], None] | None = None,
) -> ParquetProgress:
    """Write every batch as a row group of the Parquet file at ``path`` (created or replaced).

    Only one batch is in memory at a time; the encoding runs in a thread (pyarrow releases the
    GIL) while the next rows are read. On an exception the file is left as it is (incomplete:
    callers write to a staged path and delete it). Returns the totals.
    """
    progress = ParquetProgress()
    writer = pq.ParquetWriter(str(path), schema, compression=compression)
    try:
        async for batch in batches:
            await asyncio.to_thread(writer.write_batch, batch, row_group_size=max(1, batch.num_rows))
            progress.rows += batch.num_rows
            progress.row_groups += 1
            progress.bytes = os.path.getsize(path)
            if on_progress is not None:
                on_progress(progress)
    finally:
        writer.close()
    progress.bytes = os.path.getsize(path)
    return progress
