"""Taking snapshot versions: the one API every trigger (schedule, HTTP, CLI, batch re-export) uses.

A version is taken in four steps:

1. **allocate** -- version ``N = MAX + 1`` for the table, under a row lock, as ``building`` with
   the caller's trigger key (a second taker with the same key gets the existing version back);
2. **stage** -- rows stream into Parquet files under ``_txlake/staging/…`` (constant memory)
   while a lease on the version row is renewed every third of ``snapshots.lease_s``;
3. **commit** -- one MySQL transaction inserts the rows as ``snapshot_version = N`` and flips the
   status to ``complete``: the commit point;
4. **publish** -- the staged directory becomes ``tables/<table>/version=v<N>/``, the catalog and
   ``_latest`` are rewritten; then retention runs.

A failure before the commit marks the version ``failed`` and removes its staged files; a killed
taker is failed by :func:`app.snapshots.recovery.recover` once its lease runs out. A failure after
the commit is rolled forward by recovery.

Example (the ksqlDB re-export)::

    snapshotter = Snapshotter(settings)
    info = await snapshotter.create_version(
        "payment_method_totals", batches,           # AsyncIterator[pyarrow.RecordBatch]
        trigger="export", source={"kind": "ksqldb", "query": "SELECT * FROM PAYMENT_METHOD_TOTALS;"},
    )
    info.version, info.row_count, info.status        # 7, 12, "complete"
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa

from app.core.metrics import SNAPSHOT_DURATION, SNAPSHOT_LATEST_VERSION, SNAPSHOT_VERSIONS
from app.core.settings import Settings
from app.lake.files import remove_tree
from app.lake.storage import LakeStorage, open_lake_storage
from app.snapshots.commit import commit_version
from app.snapshots.db import DatabaseClock, connect
from app.snapshots.errors import SnapshotError, VersionLost
from app.snapshots.files import VersionFileWriter
from app.snapshots.publish import publish_version, refresh_catalog
from app.snapshots.recovery import RecoveryReport, recover
from app.snapshots.registry import (
    Trigger,
    VersionInfo,
    allocate,
    clear_path,
    fetch_version,
    list_versions,
    mark_failed,
    renew_lease,
    taker_identity,
)
from app.snapshots.retention import expire_old_versions
from app.snapshots.sources import RowSource, conform, live_rows
from app.snapshots.tables import TABLES, table_spec

__all__ = ["Snapshotter"]

logger = logging.getLogger(__name__)


class Snapshotter:
    """Takes, lists, recovers and expires the snapshot versions of one deployment."""

    def __init__(self, settings: Settings, storage: LakeStorage | None = None, clock: DatabaseClock | None = None) -> None:
        """``clock`` judges leases (default: the database's, :class:`DatabaseClock`)."""
        self.settings = settings
        self.storage = storage or open_lake_storage(settings.lake)
        self.clock = clock or DatabaseClock()
        self.owner = taker_identity()
        self._background: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------------------- the API

    async def create_version(
        self,
        table: str,
        rows: AsyncIterator[pa.RecordBatch],
        *,
        trigger: Trigger = "export",
        trigger_key: str | None = None,
        source: dict[str, Any] | None = None,
        source_offsets: dict[str, dict[str, int]] | None = None,
        snapshot_date: date | None = None,
    ) -> VersionInfo:
        """Take a version of ``table`` from ``rows`` and return it once complete and published.

        ``rows`` may carry extra columns and castable types (see :func:`conform`). ``source`` is
        stored as the version's description (e.g. ``{"kind": "ksqldb", "query": …}``),
        ``source_offsets`` as ``{topic: {partition: offset}}`` when known. With a ``trigger_key``
        that already has a version, that version is returned and ``rows`` is not read.
        Raises :class:`SnapshotError` if the version failed (it is then marked ``failed``).
        """
        info, created = await self.begin(table, trigger, trigger_key, snapshot_date)
        if not created:
            return info
        description = source or {"kind": trigger}
        return await self.build(info, RowSource(rows, description, source_offsets))

    async def take_live_version(
        self,
        table: str,
        *,
        trigger: Trigger = "manual",
        trigger_key: str | None = None,
        snapshot_date: date | None = None,
    ) -> VersionInfo:
        """Take a version of ``table``'s live warehouse state (rows + ledger offsets in one snapshot)."""
        info, created = await self.begin(table, trigger, trigger_key, snapshot_date)
        if not created:
            return info
        return await self.build_live(info)

    async def start_live_version(self, table: str, *, trigger: Trigger = "manual") -> VersionInfo:
        """Allocate a live version and build it in the background; returns it while ``building``."""
        info, created = await self.begin(table, trigger, None, None)
        if created:
            task = asyncio.get_running_loop().create_task(self.build_live(info))
            self._background.add(task)
            task.add_done_callback(self._background_done)
        return info

    async def take_scheduled(self, fire_time: datetime) -> list[VersionInfo]:
        """One version per table for the schedule's ``fire_time`` (every worker may call this)."""
        key = "schedule:" + fire_time.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")
        taken = []
        for table in TABLES:
            try:
                taken.append(
                    await self.take_live_version(
                        table, trigger="schedule", trigger_key=key, snapshot_date=fire_time.astimezone(UTC).date()
                    )
                )
            except SnapshotError:
                logger.exception("scheduled version of %s failed", table)
        return taken

    async def versions(self, table: str | None = None) -> list[VersionInfo]:
        """Every version row (of ``table``, or of all tables), oldest first."""
        if table is not None:
            table_spec(table)
        async with connect(self.settings.mysql) as connection:
            return await list_versions(connection, table)

    async def maintain(self) -> RecoveryReport:
        """Recovery, then retention, then a catalog refresh for every table (idempotent)."""
        async with connect(self.settings.mysql) as connection:
            report = await recover(connection, self.settings, self.storage, self.clock)
            for spec in TABLES.values():
                await expire_old_versions(connection, self.storage, spec, self.settings.snapshots.retention_versions)
                versions = await list_versions(connection, spec.name)
                if versions:
                    await refresh_catalog(connection, self.storage, spec, only_if_stale=True)
                complete = [v.version for v in versions if v.status == "complete"]
                if complete:
                    SNAPSHOT_LATEST_VERSION.labels(spec.name).set(max(complete))
        return report

    async def close(self) -> None:
        """Cancel versions still building in the background (recovery fails them later)."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    # ------------------------------------------------------------------------------- steps

    async def begin(
        self, table: str, trigger: Trigger, trigger_key: str | None, snapshot_date: date | None
    ) -> tuple[VersionInfo, bool]:
        """Allocate the next version of ``table`` (or find the one of ``trigger_key``)."""
        table_spec(table)
        key = trigger_key or f"{trigger}:{uuid.uuid4()}"
        day = snapshot_date or datetime.now(UTC).date()
        async with connect(self.settings.mysql) as connection:
            info, created = await allocate(connection, table, trigger, key, day, self.owner)
        if created:
            logger.info("%s v%d building (%s)", table, info.version, key)
        return info, created

    async def build_live(self, info: VersionInfo) -> VersionInfo:
        spec = table_spec(info.table)
        async with live_rows(self.settings.mysql, spec, self.settings.snapshots.row_group_rows) as source:
            return await self.build(info, source)

    async def build(self, info: VersionInfo, source: RowSource) -> VersionInfo:
        """Stage, commit and publish allocated version ``info`` from ``source``."""
        spec = table_spec(info.table)
        started = time.monotonic()
        writer = VersionFileWriter(
            self.storage,
            info.lake_staging_path or "",
            spec.arrow_schema,
            compression=self.settings.lake.compression,
            rows_per_file=self.settings.snapshots.rows_per_file,
            row_group_rows=self.settings.snapshots.row_group_rows,
        )
        lease = asyncio.get_running_loop().create_task(self._keep_lease(info))
        try:
            async for batch in source.batches:
                if lease.done():
                    raise VersionLost(f"{info.table} v{info.version}: lease lost")
                await writer.write(conform(spec, batch))
            await writer.close()
            lease.cancel()
            async with connect(self.settings.mysql) as connection:
                await commit_version(
                    connection,
                    spec,
                    info,
                    self.storage,
                    source=source.description,
                    offsets=source.offsets,
                    batch_rows=self.settings.snapshots.row_group_rows,
                )
        except BaseException as exc:
            writer.abort()
            lease.cancel()
            await self._fail(info, exc)
            if isinstance(exc, Exception) and not isinstance(exc, SnapshotError):
                raise SnapshotError(f"{info.table} v{info.version} failed: {exc}") from exc
            raise
        SNAPSHOT_VERSIONS.labels(info.table, "complete").inc()
        try:
            async with connect(self.settings.mysql) as connection:
                done = await fetch_version(connection, info.table, info.version)
                assert done is not None
                await publish_version(connection, self.settings, self.storage, done)
                await expire_old_versions(connection, self.storage, spec, self.settings.snapshots.retention_versions)
                done = await fetch_version(connection, info.table, info.version)
                assert done is not None
        except Exception:
            # The version is committed: recovery publishes it later; the caller still gets it.
            logger.exception("%s v%d committed but not published yet (recovery will finish it)", info.table, info.version)
            async with connect(self.settings.mysql) as connection:
                done = await fetch_version(connection, info.table, info.version)
            assert done is not None
        SNAPSHOT_DURATION.labels(info.table).observe(time.monotonic() - started)
        SNAPSHOT_LATEST_VERSION.labels(info.table).set(info.version)
        logger.info("%s v%d complete: %s rows", info.table, info.version, done.row_count)
        return done

    async def _keep_lease(self, info: VersionInfo) -> None:
        """Renew the version's lease until cancelled; returns (ends) if the version was taken from us."""
        interval = self.settings.snapshots.lease_s / 3
        while True:
            await asyncio.sleep(interval)
            async with connect(self.settings.mysql) as connection:
                if not await renew_lease(connection, info.table, info.version, info.owner):
                    logger.error("%s v%d: lease lost", info.table, info.version)
                    return

    async def _fail(self, info: VersionInfo, exc: BaseException) -> None:
        """Mark ``info`` failed and remove its staged files (best effort: recovery does it otherwise)."""
        with contextlib.suppress(Exception):
            async with connect(self.settings.mysql) as connection:
                if await mark_failed(connection, info.table, info.version, f"{type(exc).__name__}: {exc}", info.owner):
                    SNAPSHOT_VERSIONS.labels(info.table, "failed").inc()
                await asyncio.to_thread(remove_tree, self.storage, info.lake_staging_path or "")
                await clear_path(connection, info.table, info.version, "lake_staging_path")
        logger.error("%s v%d failed: %s", info.table, info.version, exc)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("background version failed: %s", task.exception())
