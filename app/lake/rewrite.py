"""Rewriting a set of Parquet files into fewer, sorted files of a target size, in bounded memory.

:func:`rewrite_sorted` reads the sources' footers (schemas, row counts, uncompressed sizes), then
sorts and writes their rows in one or more *passes*. One pass when the rows fit the memory
budget (the usual day); otherwise the rows are split into ranges of the first sort column whose
boundaries are quantiles of that column (read alone, a few bytes per row), and each pass reads
only its range (``pyarrow.dataset`` filter), sorts it and appends it to the output. Ranges are
disjoint and in order, so the output is sorted across files too.

Output files are rolled when the bytes written reach ``target_bytes`` (checked after each row
group). The last sort keys are ``_kafka_partition, _kafka_offset`` when present, so a rewrite of
the same rows gives the same files. Each output carries the key-value metadata
``txlake.offsets``: ``{partition: [first offset, last offset, rows]}`` of the rows it holds.

Pure I/O on a :class:`~app.lake.storage.LakeStorage`: no lake protocol here (see
:mod:`app.lake.compaction`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from app.lake.files import native
from app.lake.storage import LakeStorage, LocalStorage

__all__ = ["OFFSETS_KEY", "SourceFile", "WrittenFile", "file_offsets", "read_sources", "rewrite_sorted"]

OFFSETS_KEY = "txlake.offsets"
_POSITION = ("_kafka_partition", "_kafka_offset")
# Sorting takes the rows (take) into a second copy: a pass needs about twice its Arrow size.
_SORT_OVERHEAD = 2.0


@dataclass(frozen=True)
class SourceFile:
    """A file to rewrite, as its footer describes it."""

    path: str  # lake-relative
    size: int
    rows: int
    arrow_bytes: int  # uncompressed size of its row groups (about its size in memory)
    schema: pa.Schema


@dataclass(frozen=True)
class WrittenFile:
    path: str  # lake-relative
    rows: int
    size: int


def read_sources(storage: LakeStorage, paths: list[str]) -> list[SourceFile]:
    """The footers of ``paths`` (one small read each)."""
    sources = []
    for path in paths:
        filesystem, source = native(storage, path)
        with filesystem.open_input_file(source) as handle:
            size = handle.size()
            metadata = pq.read_metadata(handle)
        arrow_bytes = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
        sources.append(SourceFile(path, size, metadata.num_rows, arrow_bytes, metadata.schema.to_arrow_schema()))
    return sources


def file_offsets(table: pa.Table) -> dict[int, tuple[int, int, int]]:
    """``{partition: (first offset, last offset, rows)}`` of a table with the position columns."""
    if not set(_POSITION) <= set(table.column_names) or table.num_rows == 0:
        return {}
    grouped = table.select(list(_POSITION)).group_by("_kafka_partition").aggregate(
        [("_kafka_offset", "min"), ("_kafka_offset", "max"), ("_kafka_offset", "count")]
    )
    return {
        int(p): (int(lo), int(hi), int(n))
        for p, lo, hi, n in zip(
            grouped.column("_kafka_partition").to_pylist(),
            grouped.column("_kafka_offset_min").to_pylist(),
            grouped.column("_kafka_offset_max").to_pylist(),
            grouped.column("_kafka_offset_count").to_pylist(), strict=True,
        )
    }


def _merge_offsets(into: dict[int, list[int]], more: dict[int, tuple[int, int, int]]) -> None:
    for partition, (lo, hi, rows) in more.items():
        held = into.get(partition)
        if held is None:
            into[partition] = [lo, hi, rows]
        else:
            held[0], held[1], held[2] = min(held[0], lo), max(held[1], hi), held[2] + rows


class _RollingWriter:
    """Parquet files of about ``target_bytes`` each, named by ``name_of(index)`` under ``directory``."""

    def __init__(self, storage: LakeStorage, directory: str, name_of: Callable[[int], str], schema: pa.Schema,
                 target_bytes: int, group_rows: int, compression: str | None) -> None:
        self.storage, self.directory, self.name_of = storage, directory, name_of
        self.schema, self.target_bytes, self.group_rows = schema, target_bytes, group_rows
        self.compression = compression
        self.written: list[WrittenFile] = []
        self._stream: pa.NativeFile | None = None
        self._writer: pq.ParquetWriter | None = None
        self._path = ""
        self._rows = 0
        self._offsets: dict[int, list[int]] = {}
        self._last_group_bytes = 0

    def write(self, table: pa.Table) -> None:
        for start in range(0, table.num_rows, self.group_rows):
            chunk = table.slice(start, self.group_rows)
            if self._writer is None:
                self._open()
            assert self._writer is not None and self._stream is not None
            before = self._stream.tell()
            self._writer.write_table(chunk, row_group_size=self.group_rows)
            self._last_group_bytes = self._stream.tell() - before
            self._rows += chunk.num_rows
            _merge_offsets(self._offsets, file_offsets(chunk))
            if self._stream.tell() + self._last_group_bytes >= self.target_bytes:
                self._close()

    def close(self) -> list[WrittenFile]:
        if self._writer is not None:
            self._close()
        return self.written

    def _open(self) -> None:
        self._path = f"{self.directory}/{self.name_of(len(self.written))}"
        filesystem, target = native(self.storage, self._path)
        self._stream = filesystem.open_output_stream(target)
        self._writer = pq.ParquetWriter(self._stream, self.schema, compression=self.compression)
        self._rows, self._offsets = 0, {}

    def _close(self) -> None:
        assert self._writer is not None and self._stream is not None
        self._writer.add_key_value_metadata({OFFSETS_KEY: json.dumps(self._offsets, separators=(",", ":"))})
        self._writer.close()
        size = self._stream.tell()
        self._stream.close()
        if isinstance(self.storage, LocalStorage) and self.storage.fsync:
            fd = os.open(self.storage.root / self._path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self.written.append(WrittenFile(self._path, self._rows, size))
        self._writer = self._stream = None


def _sort_keys(schema: pa.Schema, sort_columns: tuple[str, ...]) -> list[tuple[str, str]]:
    missing = [c for c in sort_columns if c not in schema.names]
    if missing:
        raise ValueError(f"sort columns {missing} are not in the files (columns: {schema.names})")
    keys = list(dict.fromkeys([*sort_columns, *(c for c in _POSITION if c in schema.names)]))
    return [(column, "ascending") for column in keys]


def _range_filters(dataset: ds.Dataset, column: str, passes: int) -> list[ds.Expression]:
    """``passes`` disjoint, ordered filters on ``column`` of about equal row counts (nulls last)."""
    values = dataset.to_table(columns=[column]).column(column)
    valid = pc.drop_null(values)
    ordered = pc.take(valid, pc.sort_indices(valid))
    bounds = []
    for i in range(1, passes):
        value = ordered[len(ordered) * i // passes]
        if not bounds or value.as_py() != bounds[-1].as_py():
            bounds.append(value)
    field = ds.field(column)
    filters: list[ds.Expression] = []
    lower = None
    for bound in bounds:
        expr = field < bound if lower is None else (field >= lower) & (field < bound)
        filters.append(expr)
        lower = bound
    filters.append(field.is_valid() if lower is None else field >= lower)
    if values.null_count:
        filters.append(field.is_null())
    return filters


def rewrite_sorted(
    storage: LakeStorage,
    sources: list[SourceFile],
    directory: str,
    name_of: Callable[[int], str],
    *,
    sort_columns: tuple[str, ...],
    target_bytes: int,
    memory_bytes: int,
    compression: str | None,
) -> list[WrittenFile]:
    """Write the rows of ``sources`` sorted by ``sort_columns`` into files under ``directory``.

    Returns the files written (at least one if there is a row). Raises ValueError if a sort
    column is missing, OSError on I/O errors (files written so far stay: the caller owns
    ``directory`` and removes it), and RuntimeError if the rows written differ from the rows read.
    """
    if not sources:
        return []
    schema = pa.unify_schemas([source.schema for source in sources])
    keys = _sort_keys(schema, sort_columns)
    filesystem, _ = native(storage, sources[0].path)
    dataset = ds.dataset([native(storage, s.path)[1] for s in sources], schema=schema, format="parquet",
                         filesystem=filesystem)
    rows = sum(source.rows for source in sources)
    arrow_bytes = sum(source.arrow_bytes for source in sources)
    passes = max(1, math.ceil(arrow_bytes * _SORT_OVERHEAD / memory_bytes))
    # Row groups of about a quarter of a target file, judged by the sources' compressed row size
    # (sorted rows compress better, so a file ends up with more, smaller groups).
    bytes_per_row = max(1.0, sum(source.size for source in sources) / max(1, rows))
    group_rows = int(min(1_048_576, max(128, target_bytes / bytes_per_row / 4)))
    writer = _RollingWriter(storage, directory, name_of, schema, target_bytes, group_rows, compression)
    filters = [None] if passes == 1 else _range_filters(dataset, keys[0][0], passes)
    for expression in filters:
        table = dataset.to_table(filter=expression)
        if table.num_rows:
            writer.write(table.sort_by(keys))
        del table
    written = writer.close()
    if sum(f.rows for f in written) != rows:
        raise RuntimeError(f"rewrite wrote {sum(f.rows for f in written)} rows of {rows}")
    return written
