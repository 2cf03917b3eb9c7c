"""Recovery: finish or undo what dead takers left behind. Run at start and periodically, on any worker.

1. ``building`` versions whose lease (``heartbeat_at``, database clock) is older than
   ``snapshots.lease_s`` → ``failed``; their staged files are removed. Their fact rows were never
   committed (the commit point is atomic), so readers never saw anything.
2. ``failed`` versions that still name a staging directory → the directory is removed.
3. ``complete`` versions not yet published, committed more than a lease ago (so a live taker is
   not raced) → rolled forward (:func:`publish_version`).
Every step is idempotent: two workers recovering at once do the same thing twice.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import aiomysql

from app.core.metrics import SNAPSHOT_VERSIONS
from app.core.settings import Settings
from app.lake.files import remove_tree
from app.lake.storage import LakeStorage
from app.snapshots.db import DatabaseClock
from app.snapshots.publish import publish_version
from app.snapshots.registry import clear_path, list_versions

__all__ = ["RecoveryReport", "recover"]

logger = logging.getLogger(__name__)


@dataclass
class RecoveryReport:
    failed: list[tuple[str, int]] = field(default_factory=list)
    published: list[tuple[str, int]] = field(default_factory=list)
    cleaned: list[tuple[str, int]] = field(default_factory=list)


async def recover(
    connection: aiomysql.Connection, settings: Settings, storage: LakeStorage, clock: DatabaseClock | None = None
) -> RecoveryReport:
    """One recovery pass over every table's versions (see the module docstring); leases end by ``clock``."""
    report = RecoveryReport()
    now = await (clock or DatabaseClock()).now(connection)
    lease_us = int(settings.snapshots.lease_s * 1_000_000)
    stale = "heartbeat_at < %s - INTERVAL %s MICROSECOND"
    for info in await list_versions(connection, None, f"status = 'building' AND {stale}", (now, lease_us)):
        async with connection.cursor() as cursor:
            await cursor.execute(
                "UPDATE txlake_snapshot_versions SET status = 'failed', completed_at = CURRENT_TIMESTAMP(6), "
                "error = %s, trigger_key = LEFT(CONCAT(trigger_key, '#failed-v', version), 255) "
                f"WHERE table_name = %s AND version = %s AND status = 'building' AND {stale}",
                (f"abandoned: taker {info.owner} stopped renewing its lease", info.table, info.version, now, lease_us),
            )
            changed = cursor.rowcount == 1
        await connection.commit()
        if changed:
            SNAPSHOT_VERSIONS.labels(info.table, "failed").inc()
            logger.warning("%s v%d failed: taker %s is gone", info.table, info.version, info.owner)
            report.failed.append((info.table, info.version))
    for info in await list_versions(connection, None, "status = 'failed' AND lake_staging_path IS NOT NULL"):
        await asyncio.to_thread(remove_tree, storage, info.lake_staging_path or "")
        await clear_path(connection, info.table, info.version, "lake_staging_path")
        report.cleaned.append((info.table, info.version))
    pending = await list_versions(
        connection,
        None,
        "status = 'complete' AND published_at IS NULL AND completed_at < %s - INTERVAL %s MICROSECOND",
        (now, lease_us),
    )
    for info in pending:
        logger.info("%s v%d is complete but not published: rolling forward", info.table, info.version)
        await publish_version(connection, settings, storage, info)
        report.published.append((info.table, info.version))
    return report
