"""The catalog entry of a Delta stream dataset (``txlake lake ls/describe`` with ``lake.format = "delta"``).

Everything comes from the table's log, never from a listing: a listing would also count files
replaced by optimize (kept for readers of older versions until vacuum), files of commits that
never happened, and the log's own checkpoint Parquet files. The description has the keys of the
hive one (:func:`app.lake.catalog.describe_dataset`) -- files, bytes, schema, day partitions with
their last compaction -- plus the table ``version``, its Kafka ``positions`` (app transactions)
and the last checkpoint.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from app.core.settings import LakeSettings
from app.lake.delta import app_id, open_table

__all__ = ["describe_delta_dataset"]

_DAY_PREDICATE = re.compile(r"year = '(\d{4})'.*month = '(\d{2})'.*day = '(\d{2})'")


def describe_delta_dataset(
    settings: LakeSettings, dataset: str, topics: Iterable[str] = (), *, history: int = 1000
) -> dict[str, Any]:
    """The catalog description of the Delta table ``dataset`` (positions of ``topics``); KeyError if there is none."""
    table = open_table(settings, dataset)
    if table is None:
        raise KeyError(f"no Delta table {dataset!r} under {settings.root}")
    adds = pa.table(table.get_add_actions(flatten=True))
    partitions: dict[str, dict[str, Any]] = {}
    names = ("size_bytes", "num_records", "partition.year", "partition.month", "partition.day")
    for size, rows, year, month, day in zip(*(adds.column(c).to_pylist() for c in names), strict=True):
        part = partitions.setdefault(f"year={year}/month={month}/day={day}", {"files": 0, "bytes": 0, "rows": 0})
        part["files"] += 1
        part["bytes"] += int(size)
        part["rows"] += int(rows or 0)
    for entry in table.history(history):  # newest first: the first OPTIMIZE of a day is its last
        if entry.get("operation") != "OPTIMIZE":
            continue
        match = _DAY_PREDICATE.search(entry.get("operationParameters", {}).get("predicate", ""))
        if match is None:
            continue
        part = partitions.get("year={}/month={}/day={}".format(*match.groups()))
        if part is None or "last_compaction" in part:
            continue
        metrics = entry.get("operationMetrics", {})
        removed, added = (json.loads(metrics.get(k, "{}") or "{}") for k in ("filesRemoved", "filesAdded"))
        part["last_compaction"] = {
            "generation": f"v{entry['version']}",
            "finished_at": datetime.fromtimestamp(entry["timestamp"] / 1000, UTC).isoformat(timespec="seconds"),
            "before": {"files": removed.get("totalFiles", 0), "bytes": removed.get("totalSize", 0)},
            "after": {"files": added.get("totalFiles", 0), "bytes": added.get("totalSize", 0)},
        }
        part["compacted_files"] = part["files"] if part["files"] == added.get("totalFiles") else None
    schema = table.schema().to_arrow()
    configuration = table.metadata().configuration
    return {
        "dataset": dataset,
        "kind": "stream",
        "format": "delta",
        "file_count": adds.num_rows,
        "bytes": sum(p["bytes"] for p in partitions.values()),
        "rows": sum(p["rows"] for p in partitions.values()),
        "schema": [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema],
        "partitions": partitions,
        "compacted_days": sum(1 for p in partitions.values() if "last_compaction" in p),
        "version": table.version(),
        "checkpoint_interval": configuration.get("delta.checkpointInterval"),
        "positions": _positions(table, topics),
    }


def _positions(table, topics: Iterable[str], probe_misses: int = 16) -> dict[str, int]:
    """``{"<topic>[<partition>]": offset}`` of the app transactions of ``topics`` in the table's version.

    The log has no index of app ids: partitions are probed from 0 until ``probe_misses`` in a row
    have none (a partition with nothing landed yet is a miss, so a gap of that many ends the probe).
    """
    positions = {}
    for topic in topics:
        partition = misses = 0
        while misses < probe_misses:
            version = table.transaction_version(app_id(topic, partition))
            if version is None:
                misses += 1
            else:
                misses = 0
                positions[f"{topic}[{partition}]"] = int(version)
            partition += 1
    return positions
