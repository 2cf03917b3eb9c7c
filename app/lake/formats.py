"""The lake's table format (``lake.format``): which sink lands batches, where positions are read.

``hive`` (default): plain Parquet files and a JSON offset ledger per partition (:mod:`app.lake.sink`).
``delta``: Delta tables whose logs hold the offsets (:mod:`app.lake.delta_sink`).
Maintenance (``txlake lake compact|vacuum``, the worker's schedule) of each: :func:`maintenance_for`.
Each sink carries its ledger (``sink.ledger``): the worker, ``txlake progress`` and the tests
read positions through it, whatever the format.
"""

from __future__ import annotations

from app.core.settings import LakeSettings, Settings
from app.lake.delta_maintenance import DeltaMaintenance
from app.lake.delta_sink import DeltaLakeSink
from app.lake.maintenance import HiveMaintenance, LakeMaintenance
from app.lake.sink import LakeSink
from app.lake.storage import LakeStorage

__all__ = ["lake_sink", "maintenance_for"]


def maintenance_for(settings: Settings, storage: LakeStorage | None = None) -> LakeMaintenance:
    """The maintenance (compact, vacuum) of ``lake.format``: hive day rewrites, or Delta optimize/vacuum."""
    if settings.lake.format == "delta":
        return DeltaMaintenance(settings, storage)
    return HiveMaintenance(settings, storage)


def lake_sink(settings: LakeSettings) -> LakeSink | DeltaLakeSink:
    """The lake sink of ``lake.format``."""
    return DeltaLakeSink.from_settings(settings) if settings.format == "delta" else LakeSink.from_settings(settings)
