"""Running one export to the end: resolve the target, lock the dataset, query, publish.

Used by ``txlake export`` (in its own process -- the worker's ``POST /exports`` starts that
command as a subprocess, so an export's CPU and memory never touch the streaming path's loop).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from app.core.errors import ConfigurationError, TxlakeError
from app.core.feeds import Feed, load_feeds
from app.core.settings import Settings
from app.exports.lock import DatasetBusy, DatasetLock
from app.exports.request import ExportRequest
from app.exports.status import ExportStatus
from app.exports.stream import ExportError, export_stream
from app.exports.table import export_table
from app.ksqldb import KsqlDBClient
from app.snapshots import table_spec

__all__ = ["CANCELLABLE_PHASES", "resolve_feed", "run_export"]

logger = logging.getLogger(__name__)

CANCELLABLE_PHASES = ("starting", "querying")  # after these, visible changes are under way: finish them
_REPORT_EVERY_S = 0.5


def resolve_feed(settings: Settings, request: ExportRequest) -> Feed | None:
    """The stream feed of a stream export (None for a table); ConfigurationError if unknown."""
    if request.kind == "table":
        table_spec(request.name)
        return None
    for feed in load_feeds(settings):
        if feed.name == request.name:
            return feed
    raise ConfigurationError(f"no stream feed named {request.name!r} in the feeds file")


async def run_export(
    settings: Settings,
    request: ExportRequest,
    export_id: str,
    on_progress: Callable[[ExportStatus], None],
    cancel: asyncio.Event,
) -> ExportStatus:
    """Run the export; the returned status is final (succeeded, failed or cancelled). Never raises
    for export failures -- they are in ``status.errors``."""
    status = ExportStatus(export_id, request.source, request.kind)
    last_report = [0.0]

    def report(force: bool = False) -> None:
        now = time.monotonic()
        if force or now - last_report[0] >= _REPORT_EVERY_S:
            last_report[0] = now
            on_progress(status)

    try:
        feed = resolve_feed(settings, request)
        if feed is not None and settings.lake.format == "delta":
            raise ExportError(
                "stream exports replace whole day directories of the hive format; with lake.format = delta the "
                "streams are Delta tables and a day is replaced by a Delta commit, which exports do not build yet "
                "(see docs/lake-delta.md)"
            )
        with DatasetLock(settings, request.dataset):
            async with KsqlDBClient(settings.ksqldb) as client:
                await _check_source_kind(client, request)
                if feed is None:
                    work = export_table(settings, request, status, client, report)
                else:
                    work = export_stream(settings, request, feed, status, client, report)
                await _run_cancellable(work, status, cancel)
        status.phase = "done"
        status.finish("succeeded")
    except asyncio.CancelledError:
        status.finish("cancelled", "cancelled before anything became visible")
    except DatasetBusy as exc:
        status.phase = "busy"
        status.finish("failed", str(exc))
    except (TxlakeError, OSError) as exc:
        if cancel.is_set() and status.phase in CANCELLABLE_PHASES:
            # Cancelled work can also surface as an error (pyarrow aborts a write on a signal).
            status.finish("cancelled", f"cancelled before anything became visible ({type(exc).__name__})")
        else:
            logger.error("export %s of %s failed: %s", export_id, request.source, exc)
            status.finish("failed", f"{type(exc).__name__}: {exc}")
    report(force=True)
    return status


async def _check_source_kind(client: KsqlDBClient, request: ExportRequest) -> None:
    """``DESCRIBE`` the source: it must exist in ksqlDB and be of the requested kind."""
    described = await client.describe(request.source.upper())
    if str(described.get("type", "")).upper() != request.kind.upper():
        raise ExportError(f"{request.source} is a ksqlDB {described.get('type')}, not a {request.kind.upper()}")


async def _run_cancellable(work: object, status: ExportStatus, cancel: asyncio.Event) -> None:
    task = asyncio.ensure_future(work)  # type: ignore[arg-type]
    waiter = asyncio.ensure_future(cancel.wait())
    try:
        while not task.done():
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if cancel.is_set() and not task.done():
                if status.phase in CANCELLABLE_PHASES:
                    task.cancel()
                    break
                status.error(f"cancel requested during {status.phase}: finishing (changes are under way)")
                await task
    finally:
        waiter.cancel()
    await task  # re-raises the export's exception or CancelledError
