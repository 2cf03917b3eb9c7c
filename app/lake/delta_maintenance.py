"""Maintenance of a Delta lake (``lake.format = "delta"``): optimize, vacuum, checkpoints.

The same commands and schedule as the hive format (``txlake lake compact|vacuum``, the worker's
maintenance pass: :mod:`app.lake.maintenance`) run this implementation when the lake is Delta:

- **compact** a day = an ``OPTIMIZE`` of that day's partition: its small files are rewritten
  into files of about ``lake.compaction.target_file_bytes``, rows sorted by
  ``lake.compaction.sort_columns`` (delta-rs's Z-order over one column is a plain sort; over
  several, a Z-order curve). The rewrite is one Delta commit that removes the old files and adds
  the new ones (``dataChange = false``): readers of the table see the old files or the new, never
  both, never neither -- the atomic swap the hive format builds with journals is the log's own.
  The app transactions (Kafka positions) are untouched: an optimize carries none, so it never
  conflicts with the sink's appends, which delta-rs rebases onto it. Without a day
  (``unit = None``) the whole table is bin-packed (no sort).
- **which days**: the hive format's rule, read from the log instead of a listing: a day with at
  least ``min_files`` files below the target size, and with ``--closed`` only a closed one (no file
  added for ``close_idle_ms``, or older than ``close_lateness_ms``).
- **vacuum** = a checkpoint of the latest version (when the last one is older), then Delta
  ``VACUUM`` in *full* mode: files no version within ``lake.delta_vacuum_retention_hours`` needs
  -- replaced by optimize, or written by a commit that never happened (a SIGKILL between the data
  files and the log entry) -- are deleted. Expired log files go with the checkpoints (delta-rs
  cleans ``_delta_log`` up to ``delta.logRetentionDuration``, 30 days by default).

Leases (one owner per dataset-day across workers) come from the runner; two optimizes of the same
day racing anyway are caught by Delta's conflict check (the second finds its files removed and fails).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pyarrow as pa

from app.core.settings import Settings
from app.lake.compaction import CompactionError, DayFile, DayResult
from app.lake.delta import is_delta_table, open_table
from app.lake.maintenance import Fence, LakeMaintenance, Unit, is_closed
from app.lake.sink import DayPartition
from app.lake.storage import LakeStorage

__all__ = ["DeltaMaintenance", "day_files"]

logger = logging.getLogger(__name__)


def day_files(table) -> dict[DayPartition, list[DayFile]]:  # table: deltalake.DeltaTable
    """The files of the table's version by day partition, from its log (no listing)."""
    adds = pa.table(table.get_add_actions(flatten=True)).select(
        ["path", "size_bytes", "modification_time", "partition.year", "partition.month", "partition.day"]
    )
    days: dict[DayPartition, list[DayFile]] = {}
    for path, size, modified, year, month, day in zip(*(column.to_pylist() for column in adds.columns), strict=True):
        partition = DayPartition(int(year), int(month), int(day))
        mtime = modified.timestamp() if hasattr(modified, "timestamp") else float(modified) / 1000
        days.setdefault(partition, []).append(DayFile(path.rsplit("/", 1)[-1], int(size), mtime))
    return days


def _filters(day: DayPartition) -> list[tuple[str, str, str]]:
    return [("year", "=", f"{day.year:04d}"), ("month", "=", f"{day.month:02d}"), ("day", "=", f"{day.day:02d}")]


class DeltaMaintenance(LakeMaintenance):
    """:class:`~app.lake.maintenance.LakeMaintenance` of Delta tables (see the module docstring)."""

    format = "delta"

    def __init__(self, settings: Settings, storage: LakeStorage | None = None, *, retention_hours: float | None = None) -> None:
        super().__init__(settings, storage)
        self.retention_hours = settings.lake.delta_vacuum_retention_hours if retention_hours is None else retention_hours

    def datasets(self) -> list[str]:
        return [name for name in super().datasets() if is_delta_table(self.settings.lake, name)]

    def plan(self, dataset: str, day: DayPartition | None = None, *, closed_only: bool = False,
             now: float | None = None) -> list[Unit]:
        table = open_table(self.settings.lake, dataset)
        if table is None:
            return []
        now = time.time() if now is None else now
        c = self.settings.lake.compaction
        units = []
        for partition, files in day_files(table).items():
            if day is not None and partition != day:
                continue
            if sum(f.size < c.target_file_bytes for f in files) < c.min_files:
                continue
            if closed_only and not is_closed(partition, files, now, c.close_idle_ms, c.close_lateness_ms):
                continue
            units.append(partition)
        return sorted(units)

    def compact(self, dataset: str, unit: Unit, fence: Fence) -> DayResult:
        from deltalake import WriterProperties

        started, cpu = time.monotonic(), time.process_time()
        table = open_table(self.settings.lake, dataset)
        if table is None:
            raise CompactionError(f"{dataset} is not a Delta table (yet)")
        c, lake = self.settings.lake.compaction, self.settings.lake
        label = str(unit) if unit is not None else "*"
        before = [f for d, files in day_files(table).items() if unit is None or d == unit for f in files]
        result = DayResult(dataset, label, "skipped", files_before=len(before), bytes_before=sum(f.size for f in before))
        if len(before) < 2:
            result.reason = "nothing to compact"
            return result
        codec = (c.compression or lake.compression).upper()
        properties = WriterProperties(compression="UNCOMPRESSED" if codec == "NONE" else codec)
        fence()  # the lease is still ours; Delta's conflict check guards the commit itself
        if unit is None:
            metrics = table.optimize.compact(target_size=c.target_file_bytes, writer_properties=properties)
        else:
            metrics = table.optimize.z_order(
                list(c.sort_columns), partition_filters=_filters(unit), target_size=c.target_file_bytes,
                writer_properties=properties,
            )
        after_table = open_table(lake, dataset)
        after = [f for d, files in day_files(after_table).items() if unit is None or d == unit for f in files]
        result.status = "compacted" if metrics.get("numFilesRemoved") else "skipped"
        result.files_after, result.bytes_after = len(after), sum(f.size for f in after)
        result.replaced, result.written = int(metrics.get("numFilesRemoved", 0)), int(metrics.get("numFilesAdded", 0))
        result.rows = _rows(after_table, unit)
        result.generation = f"v{after_table.version()}"
        result.seconds, result.cpu_seconds = time.monotonic() - started, time.process_time() - cpu
        return result

    def vacuum(self, dataset: str, fence: Fence) -> dict[str, Any]:
        table = open_table(self.settings.lake, dataset)
        if table is None:
            return {"removed_files": 0, "checkpoint_version": None}
        checkpoint = None
        if _last_checkpoint_version(self.storage, dataset) != table.version():
            table.create_checkpoint()
            checkpoint = table.version()
        fence()
        removed = table.vacuum(
            retention_hours=int(self.retention_hours), dry_run=False, enforce_retention_duration=False, full=True
        )
        if removed:
            logger.info("lake vacuum of %s removed %d files", dataset, len(removed))
        return {"removed_files": len(removed), "checkpoint_version": checkpoint, "version": table.version()}


def _rows(table, unit: Unit) -> int:
    adds = pa.table(table.get_add_actions(flatten=True))
    if unit is None:
        return int(pa.compute.sum(adds.column("num_records")).as_py() or 0)
    rows = 0
    names = ("num_records", "partition.year", "partition.month", "partition.day")
    for count, year, month, day in zip(*(adds.column(c).to_pylist() for c in names), strict=True):
        if (int(year), int(month), int(day)) == (unit.year, unit.month, unit.day):
            rows += int(count or 0)
    return rows


def _last_checkpoint_version(storage: LakeStorage, dataset: str) -> int | None:
    """The version of the table's newest checkpoint (``_delta_log/_last_checkpoint``), or None."""
    data = storage.read(f"{dataset}/_delta_log/_last_checkpoint")
    try:
        return None if data is None else int(json.loads(data)["version"])
    except (ValueError, KeyError, TypeError):
        return None
