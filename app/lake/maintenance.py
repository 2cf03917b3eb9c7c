"""Lake maintenance -- compaction and vacuum -- behind one small interface per lake format.

``txlake lake compact`` / ``txlake lake vacuum`` and the worker's schedule
(:mod:`app.lake.schedule`) only talk to :class:`LakeMaintenance`; each lake format implements it
(:class:`HiveMaintenance` here for the default hive Parquet layout;
:class:`~app.lake.delta_maintenance.DeltaMaintenance` for Delta tables; :func:`app.lake.formats.maintenance_for`
picks by ``lake.format``). The runner (:func:`run_maintenance`) gives every unit of work its
lease, so one dataset-day has one owner across workers, and holds the dataset lock where the
format needs it (local hive lakes: an export and a compaction of a dataset run one at a time).

A *unit* is what one lease covers: a day partition, or ``None`` for a format that maintains a
dataset as a whole (e.g. a Delta ``optimize`` of the table).

The sync methods run in a worker thread; ``fence`` (from the lease) raises
:class:`~app.lake.compaction.LeaseLost` when the unit's lease is gone: call it right before the
commit point of anything that changes what readers see.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from app.core.settings import Settings
from app.lake.compaction import CompactionError, DayFile, DayResult, HiveCompactor, LeaseLost, active_journals, list_day_files
from app.lake.dataset_lock import DatasetBusy, DatasetLock
from app.lake.files import list_dirs
from app.lake.sink import DayPartition
from app.lake.storage import LakeStorage, open_lake_storage

__all__ = ["FORMATS", "Fence", "HiveMaintenance", "LakeMaintenance", "MaintenanceReport", "is_closed",
           "maintenance_for", "run_maintenance"]

logger = logging.getLogger(__name__)

Fence = Callable[[], None]
Unit = DayPartition | None


class LakeMaintenance(abc.ABC):
    """Compaction and vacuum of one lake format. Sync; called from a thread by :func:`run_maintenance`."""

    format: ClassVar[str]

    def __init__(self, settings: Settings, storage: LakeStorage | None = None) -> None:
        self.settings = settings
        self.storage = storage or open_lake_storage(settings.lake)

    def datasets(self) -> list[str]:
        """The stream datasets in the lake (``streams/<name>``)."""
        return [f"streams/{name}" for name in list_dirs(self.storage, "streams")]

    @abc.abstractmethod
    def plan(self, dataset: str, day: DayPartition | None = None, *, closed_only: bool = False,
             now: float | None = None) -> list[Unit]:
        """The units of ``dataset`` to compact, oldest first: those with too many small files (only
        closed ones with ``closed_only``; only ``day`` when given), plus any with interrupted work."""

    @abc.abstractmethod
    def compact(self, dataset: str, unit: Unit, fence: Fence) -> DayResult:
        """Compact one unit (finishing its interrupted work first). Raises LeaseLost, CompactionError, OSError."""

    @abc.abstractmethod
    def vacuum(self, dataset: str, fence: Fence) -> dict[str, Any]:
        """Remove what no reader can see any more (leftovers, replaced files past retention); returns counts."""

    def resource(self, dataset: str, unit: Unit) -> str:
        """The lease name of a unit."""
        return f"compact:{dataset}:{unit.path if unit is not None else '*'}"

    @contextlib.contextmanager
    def exclusive(self, dataset: str) -> Iterator[None]:
        """Held around every compaction of ``dataset`` (raises DatasetBusy); nothing by default."""
        yield


def is_closed(day: DayPartition, files: list[DayFile], now: float, idle_ms: int, lateness_ms: int | None) -> bool:
    """Whether no new file reached the day for ``idle_ms``, or its end is more than ``lateness_ms`` ago."""
    newest = max((f.mtime for f in files), default=0.0)
    if now - newest >= idle_ms / 1000:
        return True
    if lateness_ms is None:
        return False
    end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    return now - end.timestamp() >= lateness_ms / 1000


class HiveMaintenance(LakeMaintenance):
    """The default format: hive day partitions of Parquet files (:mod:`app.lake.compaction`)."""

    format = "hive"

    def __init__(self, settings: Settings, storage: LakeStorage | None = None) -> None:
        super().__init__(settings, storage)
        self.compactor = HiveCompactor(self.storage, settings.lake)

    def plan(self, dataset: str, day: DayPartition | None = None, *, closed_only: bool = False,
             now: float | None = None) -> list[Unit]:
        now = time.time() if now is None else now
        c = self.settings.lake.compaction
        units: set[DayPartition] = {DayPartition.parse(j.day) for j in active_journals(self.storage, dataset)}
        for partition, files in list_day_files(self.storage, dataset).items():
            if day is not None and partition != day:
                continue
            if not self.compactor.needs_compaction(dataset, partition, files):
                continue
            if closed_only and not is_closed(partition, files, now, c.close_idle_ms, c.close_lateness_ms):
                continue
            units.add(partition)
        if day is not None:
            units &= {day}
        return sorted(units)

    def compact(self, dataset: str, unit: Unit, fence: Fence) -> DayResult:
        if unit is None:
            raise CompactionError("the hive format compacts day by day: give a day")
        return self.compactor.compact_day(dataset, unit, fence)

    def vacuum(self, dataset: str, fence: Fence) -> dict[str, Any]:
        retention_s = max(self.settings.lake.compaction.vacuum_retention_ms / 1000, self.settings.lake.staging_grace_s)
        return self.compactor.vacuum(dataset, retention_s)

    @contextlib.contextmanager
    def exclusive(self, dataset: str) -> Iterator[None]:
        if self.settings.lake.is_s3:  # no exports on S3; leases alone keep compactions apart
            yield
            return
        with DatasetLock(self.settings, dataset):
            yield


FORMATS: dict[str, type[LakeMaintenance]] = {"hive": HiveMaintenance}
"""Lake format name (``lake.format``) -> its maintenance."""


def maintenance_for(settings: Settings, storage: LakeStorage | None = None) -> LakeMaintenance:
    """The maintenance of the configured lake format (hive when the settings name none)."""
    name = getattr(settings.lake, "format", "hive")
    try:
        return FORMATS[name](settings, storage)
    except KeyError:
        raise CompactionError(f"no maintenance for lake format {name!r}") from None


@dataclass
class MaintenanceReport:
    """What a maintenance run did: one result per unit, and vacuum counts per dataset."""

    results: list[DayResult] = field(default_factory=list)
    vacuumed: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(r.status != "failed" for r in self.results)


async def run_maintenance(
    settings: Settings,
    maintenance: LakeMaintenance,
    *,
    dataset: str | None = None,
    day: DayPartition | None = None,
    closed_only: bool = False,
    compact: bool = True,
    vacuum: bool = False,
    on_result: Callable[[DayResult], None] | None = None,
    on_vacuum: Callable[[str, dict[str, Any]], None] | None = None,
) -> MaintenanceReport:
    """Compact (and/or vacuum) the datasets, each unit under its lease; results as they come.

    A unit whose lease another worker holds, or whose dataset is being exported, is reported
    ``busy`` and left for later. A failing unit is reported ``failed`` and the run goes on.
    """
    from app.lake.lease import LeaseStore

    report = MaintenanceReport()
    lease_s = settings.lake.compaction.lease_ms / 1000
    datasets = [dataset] if dataset else await asyncio.to_thread(maintenance.datasets)
    async with LeaseStore(settings.mysql) as leases:
        for name in datasets:
            units: list[Unit] = []
            if compact:
                units = await asyncio.to_thread(maintenance.plan, name, day, closed_only=closed_only)
            elif vacuum:  # vacuum rolls interrupted compactions forward first, each under its lease
                units = sorted({DayPartition.parse(j.day) for j in active_journals(maintenance.storage, name)})
            for unit in units:
                result = await _compact_unit(maintenance, leases, name, unit, lease_s)
                report.results.append(result)
                if on_result is not None:
                    on_result(result)
            if vacuum:
                async with leases.holding(f"vacuum:{name}", lease_s) as lease:
                    if lease is not None:
                        counts = await asyncio.to_thread(maintenance.vacuum, name, lease.check)
                        report.vacuumed[name] = counts
                        if on_vacuum is not None:
                            on_vacuum(name, counts)
    return report


async def _compact_unit(maintenance: LakeMaintenance, leases: Any, dataset: str, unit: Unit, lease_s: float) -> DayResult:
    label = str(unit) if unit is not None else "*"
    async with leases.holding(maintenance.resource(dataset, unit), lease_s) as lease:
        if lease is None:
            return DayResult(dataset, label, "busy", reason="another worker holds its lease")
        try:
            return await asyncio.to_thread(_exclusively, maintenance, dataset, unit, lease.check)
        except DatasetBusy as exc:
            return DayResult(dataset, label, "busy", reason=str(exc))
        except (LeaseLost, CompactionError, OSError, ValueError, RuntimeError) as exc:
            logger.error("compaction of %s %s failed: %s", dataset, label, exc)
            return DayResult(dataset, label, "failed", reason=str(exc))


def _exclusively(maintenance: LakeMaintenance, dataset: str, unit: Unit, fence: Fence) -> DayResult:
    with maintenance.exclusive(dataset):
        return maintenance.compact(dataset, unit, fence)
