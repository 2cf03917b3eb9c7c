"""Stream export: rewrite a range of day partitions of a stream dataset from ksqlDB.

The query selects ksqlDB's ``ROWPARTITION`` and ``ROWOFFSET`` pseudo-columns (ksqlDB ≥ 0.24),
so every exported row keeps its Kafka coordinates and lands under the same name and columns
(``_kafka_partition``, ``_kafka_offset``) as the streaming path would give it. How the two
coexist (the cut, file ownership, one atomic exchange per day) is in :mod:`app.exports.day_swap`.

Steps: lock the dataset, clean up after killed exports, read the cut, run
``SELECT *, ROWPARTITION, ROWOFFSET FROM <S> WHERE ROWTIME >= … AND ROWTIME < …;`` (the
streams' ROWTIME is their event time), validate each row with the feed's record model, keep
the rows of the range at or below the cut, stage one Parquet file per (day, partition), check
that ksqlDB served every record the lake has in the range (Kafka retention may have dropped old
ones: then nothing is replaced), exchange the days, then upsert the dimensions the feed feeds
(latest event wins, never REPLACE).

Cancellation or failure before the first exchange leaves the lake as it was. The exchanges
themselves are not cancellable (renames, milliseconds); a crash between two days leaves every
day either old or new, never mixed.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from app.core.errors import TxlakeError
from app.core.feeds import Feed
from app.core.settings import Settings
from app.exports.day_swap import FILE_NAME, ExportDaySwap, cut_of, recover_work, work_root
from app.exports.request import ExportRequest
from app.exports.status import ExportStatus
from app.ksqldb import KsqlDBClient
from app.lake.rewrite import OFFSETS_KEY, file_offsets
from app.lake.sink import DayPartition
from app.snapshots.db import connect
from models.dimensions import DIMENSIONS, latest_rows

__all__ = ["ExportError", "export_stream"]

FLUSH_ROWS = 10_000


class ExportError(TxlakeError):
    """The export cannot be done as asked; nothing visible changed."""


@dataclass
class _DayFile:
    """The staged Parquet file of one (day, Kafka partition)."""

    path: Path
    partition: int
    rows: int = 0
    first_offset: int | None = None
    writer: pq.ParquetWriter | None = None
    records: list[Any] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)


class _Stager:
    def __init__(self, feed: Feed, staging: Path, compression: str | None, fsync: bool) -> None:
        self.feed, self.staging, self.compression, self.fsync = feed, staging, compression, fsync
        self.files: dict[tuple[date, int], _DayFile] = {}
        self.lowest: dict[int, int] = {}  # lowest offset ksqlDB served, per partition

    def add(self, day: date, partition: int, offset: int, record: Any) -> None:
        key = (day, partition)
        target = self.files.get(key)
        if target is None:
            target = self.files[key] = _DayFile(self.staging / f"{day.isoformat()}+{partition}.parquet.tmp", partition)
        target.records.append(record)
        target.offsets.append(offset)
        target.rows += 1
        if target.first_offset is None or offset < target.first_offset:
            target.first_offset = offset
        if len(target.records) >= FLUSH_ROWS:
            self._flush(target)

    def _flush(self, target: _DayFile) -> None:
        if not target.records:
            return
        table = self.feed.record_kind.to_table(target.records, [target.partition] * len(target.records), target.offsets)
        if target.writer is None:
            target.writer = pq.ParquetWriter(str(target.path), table.schema, compression=self.compression)
        target.writer.write_table(table)
        target.records, target.offsets = [], []

    def close(self) -> dict[date, list[tuple[Path, str]]]:
        """Flush and (with ``lake.fsync``) fsync every file; ``{day: [(staged path, final name)]}``."""
        by_day: dict[date, list[tuple[Path, str]]] = {}
        for (day, partition), target in sorted(self.files.items()):
            self._flush(target)
            assert target.writer is not None and target.first_offset is not None
            target.writer.close()
            if self.fsync:
                fd = os.open(target.path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            name = f"{self.feed.topic}+{partition}+{target.first_offset:020d}.parquet"
            by_day.setdefault(day, []).append((target.path, name))
        return by_day

    def abort(self) -> None:
        for target in self.files.values():
            if target.writer is not None:
                target.writer.close()


def _query(request: ExportRequest) -> str:
    assert request.range is not None
    start = datetime.combine(request.range.from_day, time(), UTC)
    end = datetime.combine(request.range.to_day + timedelta(days=1), time(), UTC)
    return (f"SELECT *, ROWPARTITION, ROWOFFSET FROM {request.source.upper()} "  # noqa: S608 - a validated name
            f"WHERE ROWTIME >= {int(start.timestamp() * 1000)} AND ROWTIME < {int(end.timestamp() * 1000)};")


def _day(value: date) -> DayPartition:
    return DayPartition(value.year, value.month, value.day)


async def export_stream(
    settings: Settings,
    request: ExportRequest,
    feed: Feed,
    status: ExportStatus,
    client: KsqlDBClient,
    report: Callable[[], None],
) -> None:
    """Rewrite ``request.range`` of ``feed``'s dataset (the caller holds the dataset's export lock)."""
    if settings.lake.is_s3:
        raise ExportError("stream exports need a local (or shared POSIX) lake: S3 has no atomic directory exchange")
    assert request.range is not None
    root = Path(settings.lake.root)
    recover_work(root, feed.dataset)
    cut = await asyncio.to_thread(cut_of, root, feed.dataset, feed.topic)
    work = work_root(root, feed.dataset) / status.id
    staging = work / "staged"
    staging.mkdir(parents=True, exist_ok=True)
    first, last = request.range.from_day, request.range.to_day
    compression = None if settings.lake.compression == "none" else settings.lake.compression
    stager = _Stager(feed, staging, compression, settings.lake.fsync)
    dimensions = [DIMENSIONS[name] for name in feed.warehouse]
    latest: dict[str, dict[Any, Any]] = {d.table: {} for d in dimensions}
    model = feed.record_kind.model
    swapped = False
    try:
        status.phase = "querying"
        report()
        async with client.query(_query(request), {"auto.offset.reset": "earliest"}) as query:
            names = [column.name for column in query.columns]
            if "ROWPARTITION" not in names or "ROWOFFSET" not in names:
                raise ExportError("ksqlDB did not return ROWPARTITION/ROWOFFSET (needs ksqlDB 0.24 or later)")
            at_partition, at_offset = names.index("ROWPARTITION"), names.index("ROWOFFSET")
            fields = [(i, name) for i, name in enumerate(names) if i not in (at_partition, at_offset)]
            async for rows in query.batches():
                for row in rows:
                    partition, offset = row[at_partition], row[at_offset]
                    lowest = stager.lowest.get(partition)
                    if lowest is None or offset < lowest:
                        stager.lowest[partition] = offset
                    if offset > cut.get(partition, -1):
                        status.skipped_rows += 1  # the streaming path owns it
                        continue
                    try:
                        record = model.model_validate({name: row[i] for i, name in fields})
                    except ValidationError as exc:
                        status.skipped_rows += 1
                        status.error(f"{feed.topic}[{partition}]@{offset}: invalid row: {exc.errors()[0]['msg']}")
                        continue
                    day = record.event_timestamp.astimezone(UTC).date()
                    if not first <= day <= last:
                        status.skipped_rows += 1
                        continue
                    stager.add(day, partition, offset, record)
                    for dimension in dimensions:
                        _remember_latest(latest[dimension.table], dimension, record)
                    status.rows += 1
                status.bytes = query.bytes
                report()
        files = await asyncio.to_thread(stager.close)
        swap = ExportDaySwap.for_export(root, feed.dataset, feed.topic, cut, work, settings.lake.fsync)
        _check_coverage(swap, request, stager)
        status.phase = "swapping"
        report()
        swapped = True  # from here on: finish the exchanges even if cancelled
        result = await asyncio.shield(asyncio.to_thread(_swap_days, swap, request, files))
        status.result = {"dataset": feed.dataset, "days": result, "cut": {str(p): o for p, o in sorted(cut.items())}}
        if dimensions:
            status.phase = "dimensions"
            report()
            status.result["dimensions"] = await _upsert_dimensions(settings, dimensions, latest)
    except BaseException:
        stager.abort()
        if not swapped:
            shutil.rmtree(work, ignore_errors=True)
        raise
    shutil.rmtree(work, ignore_errors=True)


def _remember_latest(seen: dict[Any, Any], dimension: Any, record: Any) -> None:
    key = dimension.extract(record)[0]
    held = seen.get(key)
    if held is None or record.event_timestamp >= held.event_timestamp:
        seen[key] = record


def _check_coverage(swap: ExportDaySwap, request: ExportRequest, stager: _Stager) -> None:
    """Refuse to replace records ksqlDB did not serve: nothing is changed then.

    Two checks per day and partition, on the live files the export would replace: none may
    start below the lowest offset ksqlDB returned for the partition (Kafka retention dropped
    it), and together they may not hold more rows than the export has (rows ksqlDB did not
    return: a ROWTIME that is not the event time, a filtered source). An unreadable file counts
    as empty: replacing it is the repair.
    """
    assert request.range is not None
    for day in request.range.days():
        held: dict[int, int] = {}
        for name in swap.replaced_files(_day(day)):
            for partition, (start, rows) in _held_offsets(swap.live(_day(day)) / name).items():
                lowest = stager.lowest.get(partition)
                if lowest is None or start < lowest:
                    raise ExportError(
                        f"ksqlDB no longer serves offset {start} of partition {partition} that the lake holds "
                        f"on {day} (Kafka retention?): the export would lose it, nothing was changed"
                    )
                held[partition] = held.get(partition, 0) + rows
        for partition, rows in held.items():
            exported = stager.files.get((day, partition))
            if rows > (exported.rows if exported else 0):
                raise ExportError(
                    f"the lake holds {rows} rows of partition {partition} on {day}, ksqlDB returned "
                    f"{exported.rows if exported else 0}: the export would lose rows, nothing was changed"
                )


def _held_offsets(path: Path) -> dict[int, tuple[int, int]]:
    """``{partition: (first offset, rows)}`` of a live file; empty if it cannot be read (replacing it is the repair).

    A sink file names its partition and first offset; a compacted file holds several partitions
    and says so in its ``txlake.offsets`` metadata (read from the columns if that is missing).
    """
    try:
        handle = pq.ParquetFile(path)
        match = FILE_NAME.match(path.name)
        if match is not None:
            return {int(match.group("partition")): (int(match.group("start")), handle.metadata.num_rows)}
        stored = (handle.metadata.metadata or {}).get(OFFSETS_KEY.encode())
        if stored is not None:
            return {int(p): (int(lo), int(n)) for p, (lo, _hi, n) in json.loads(stored).items()}
        return {p: (lo, n) for p, (lo, _hi, n) in file_offsets(handle.read(columns=["_kafka_partition", "_kafka_offset"])).items()}
    except (OSError, pa.ArrowException, ValueError):
        return {}


def _swap_days(swap: ExportDaySwap, request: ExportRequest, files: dict[date, list[tuple[Path, str]]]) -> dict[str, Any]:
    assert request.range is not None
    return {day.isoformat(): swap.apply_export(_day(day), files.get(day, [])) for day in request.range.days()}


async def _upsert_dimensions(settings: Settings, dimensions: list[Any], latest: dict[str, dict[Any, Any]]) -> dict[str, int]:
    """Upsert the latest row per key of each dimension (the sink's own latest-event-wins SQL)."""
    counts = {}
    async with connect(settings.mysql) as connection:
        async with connection.cursor() as cursor:
            for dimension in dimensions:
                rows = latest_rows(dimension, latest[dimension.table].values())
                for start in range(0, len(rows), 1000):
                    await cursor.executemany(dimension.upsert_sql, rows[start:start + 1000])
                counts[dimension.table] = len(rows)
        await connection.commit()
    return counts
