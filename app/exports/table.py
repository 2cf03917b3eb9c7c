"""Table export: a new snapshot version of a table, built from a ksqlDB pull query.

``SELECT * FROM <TABLE>;`` streams through the client as Arrow batches (column names lower-cased
to txlake's spelling) straight into :meth:`app.snapshots.Snapshotter.create_version` with
``trigger="export"``: the version becomes visible in the lake and the warehouse only when
complete, and a failed, cancelled or killed export leaves the previous version current (the
snapshot protocol's guarantee: see :mod:`app.snapshots.service`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pyarrow as pa

from app.core.settings import Settings
from app.exports.request import ExportRequest
from app.exports.status import ExportStatus
from app.ksqldb import KsqlDBClient, Query
from app.snapshots import Snapshotter

__all__ = ["export_table"]


async def export_table(
    settings: Settings,
    request: ExportRequest,
    status: ExportStatus,
    client: KsqlDBClient,
    report: Callable[[], None],
) -> None:
    """Build and publish a new version of ``request.name`` (a table of :data:`app.snapshots.TABLES`)."""
    sql = f"SELECT * FROM {request.source.upper()};"  # noqa: S608 - a validated name (ExportRequest.source)
    snapshotter = Snapshotter(settings)
    status.phase = "querying"
    report()

    def progress(query: Query) -> None:
        status.rows, status.bytes = query.rows, query.bytes
        report()

    async with client.query(sql, {"auto.offset.reset": "earliest"}, on_progress=progress) as query:

        async def batches() -> AsyncIterator[pa.RecordBatch]:
            async for batch in query.record_batches(settings.snapshots.row_group_rows):
                yield batch.rename_columns([name.lower() for name in batch.schema.names])

        info = await snapshotter.create_version(
            request.name, batches(), trigger="export", trigger_key=f"export:{status.id}",
            source={"kind": "ksqldb", "query": sql, "url": settings.ksqldb.url, "export_id": status.id},
        )
    status.result = {"table": info.table, "version": info.version, "row_count": info.row_count, "status": info.status}
