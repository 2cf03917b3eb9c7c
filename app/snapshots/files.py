"""A version's Parquet files: written as rows arrive (constant memory), read back in batches.

:class:`VersionFileWriter` buffers at most ``row_group_rows`` rows, writes them as one row group,
and starts a new file every ``rows_per_file`` rows (``part-00000.parquet``, ``part-00001.parquet``
…). Every call that touches storage runs in a worker thread: the event loop never blocks on I/O.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from app.lake.files import list_tree, native
from app.lake.storage import LakeStorage, LocalStorage

__all__ = ["VersionFileWriter", "read_batches"]


class VersionFileWriter:
    """Writes one version's rows into ``directory`` of the lake; :meth:`close` finishes the last file."""

    def __init__(
        self,
        storage: LakeStorage,
        directory: str,
        schema: pa.Schema,
        *,
        compression: str | None,
        rows_per_file: int,
        row_group_rows: int,
    ) -> None:
        self.storage = storage
        self.directory = directory
        self.schema = schema
        self.compression = None if compression in (None, "none") else compression
        self.rows_per_file = rows_per_file
        self.row_group_rows = row_group_rows
        self.rows_written = 0
        self.files: list[str] = []
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._stream: Any = None
        self._rows_in_file = 0

    async def write(self, batch: pa.RecordBatch) -> None:
        """Add rows (already in :attr:`schema`); flushes a row group when enough are buffered."""
        if batch.num_rows == 0:
            return
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        while self._pending_rows >= self.row_group_rows:
            await asyncio.to_thread(self._flush, self.row_group_rows)

    async def close(self) -> list[str]:
        """Write what is buffered and close the current file; returns the files written.

        A version without rows still gets one (empty) file, so readers find its schema.
        """
        if self._pending_rows:
            await asyncio.to_thread(self._flush, self._pending_rows)
        if not self.files:
            await asyncio.to_thread(self._open_file)
        await asyncio.to_thread(self._close_file)
        return self.files

    def abort(self) -> None:
        """Close an open file without caring about its content (the staging dir is removed after)."""
        if self._writer is not None:
            try:
                self._close_file()
            except Exception:  # noqa: BLE001, S110 - the files are discarded anyway
                pass

    def _flush(self, rows: int) -> None:
        table = pa.Table.from_batches(self._pending, schema=self.schema)
        head, rest = table.slice(0, rows), table.slice(rows)
        self._pending = rest.to_batches()
        self._pending_rows = rest.num_rows
        while head.num_rows:
            if self._writer is None:
                self._open_file()
            room = self.rows_per_file - self._rows_in_file
            part, head = head.slice(0, room), head.slice(room)
            assert self._writer is not None
            self._writer.write_table(part, row_group_size=max(part.num_rows, 1))
            self._rows_in_file += part.num_rows
            self.rows_written += part.num_rows
            if self._rows_in_file >= self.rows_per_file:
                self._close_file()

    def _open_file(self) -> None:
        path = f"{self.directory}/part-{len(self.files):05d}.parquet"
        self.storage.makedirs(self.directory)
        filesystem, target = native(self.storage, path)
        self._stream = filesystem.open_output_stream(target)
        self._writer = pq.ParquetWriter(self._stream, self.schema, compression=self.compression)
        self.files.append(path)
        self._rows_in_file = 0

    def _close_file(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._stream.close()
        self._writer = self._stream = None
        path = self.files[-1]
        if isinstance(self.storage, LocalStorage) and self.storage.fsync:
            fd = os.open(self.storage.root / path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self.storage.sync_directory(self.directory)


def read_batches(storage: LakeStorage, directory: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The rows of every Parquet file under ``directory``, in file order, ``batch_rows`` at a time.

    A blocking generator (call ``next`` in a thread): one row group is in memory at a time.
    """
    for entry in list_tree(storage, directory):
        if not entry.path.endswith(".parquet"):
            continue
        filesystem, source = native(storage, entry.path)
        with filesystem.open_input_file(source) as handle:
            yield from pq.ParquetFile(handle).iter_batches(batch_size=batch_rows)
