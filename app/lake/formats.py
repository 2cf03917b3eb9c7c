"""The lake's table format (``lake.format``): which sink lands batches, where positions are read.

``hive`` (default): plain Parquet files and a JSON offset ledger per partition (:mod:`app.lake.sink`).
``delta``: Delta tables whose logs hold the offsets (:mod:`app.lake.delta_sink`).
Maintenance (``txlake lake compact|vacuum``, the worker's schedule) of each: :func:`maintenance_for`.
Everything that reads a lake position -- the worker on assignment, ``txlake progress``,
``txlake verify``, the benchmark -- goes through :class:`LakePositions`, so it works with both.
"""

from __future__ import annotations

import threading

from app.core.settings import LakeSettings, Settings
from app.lake.delta import open_table, read_position
from app.lake.delta_maintenance import DeltaMaintenance
from app.lake.delta_sink import DeltaLakeSink
from app.lake.maintenance import HiveMaintenance, LakeMaintenance
from app.lake.sink import LakeSink, read_landed_through
from app.lake.storage import LakeStorage, open_lake_storage

__all__ = ["LakePositions", "lake_sink", "maintenance_for"]


def maintenance_for(settings: Settings, storage: LakeStorage | None = None) -> LakeMaintenance:
    """The maintenance (compact, vacuum) of ``lake.format``: hive day rewrites, or Delta optimize/vacuum."""
    if settings.lake.format == "delta":
        return DeltaMaintenance(settings, storage)
    return HiveMaintenance(settings, storage)


def lake_sink(settings: LakeSettings) -> LakeSink | DeltaLakeSink:
    """The lake sink of ``lake.format``."""
    return DeltaLakeSink.from_settings(settings) if settings.format == "delta" else LakeSink.from_settings(settings)


class LakePositions:
    """Reads the lake's committed position of (dataset, topic, partition), for either format.

    Read-only and safe while workers run. A Delta table is opened once per dataset per instance
    (its latest version at that moment): make a new instance to see later commits.
    """

    def __init__(self, settings: LakeSettings, storage: LakeStorage | None = None) -> None:
        self.settings = settings
        self._storage = storage
        self._tables: dict[str, object] = {}
        self._lock = threading.Lock()

    @property
    def storage(self) -> LakeStorage:
        if self._storage is None:
            self._storage = open_lake_storage(self.settings)
        return self._storage

    def landed_through(self, dataset: str, topic: str, partition: int) -> int:
        """The highest offset the lake holds for the partition; -1 for none."""
        if self.settings.format != "delta":
            return read_landed_through(self.storage, dataset, topic, partition)
        with self._lock:
            if dataset not in self._tables:
                self._tables[dataset] = open_table(self.settings, dataset)
            table = self._tables[dataset]
        return read_position(table, topic, partition)
