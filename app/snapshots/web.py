"""The worker's snapshot endpoints, schedule and maintenance timer.

* ``GET /snapshots`` and ``GET /snapshots/{table}`` -- the version rows (JSON), no token needed;
* ``POST /snapshots/{table}`` -- allocate a version of the table's live state and build it in the
  background: ``202`` with the version (``status: building``). Requires
  ``Authorization: Bearer <web.api_token>``: ``401`` without the right token, ``403`` when no token
  is configured (taking versions over HTTP is then disabled, never open);
* the cron schedule (``snapshots.schedule``, UTC) on every worker: the shared trigger key makes one
  version per table and fire time;
* recovery + retention every ``snapshots.maintenance_interval_s`` (and once at start).
"""

from __future__ import annotations

import hmac
import logging
from datetime import UTC, datetime
from typing import Any

import faust
from faust.web import View

from app.core.errors import ConfigurationError
from app.core.settings import Settings
from app.snapshots.errors import SnapshotError
from app.snapshots.schedule import fire_time
from app.snapshots.service import Snapshotter
from app.snapshots.tables import table_spec

__all__ = ["mount_snapshots"]

logger = logging.getLogger(__name__)


def authorized(settings: Settings, header: str | None) -> int | None:
    """``None`` if the request may take a version, else the HTTP status to answer (401/403)."""
    if settings.web.api_token is None or not settings.web.api_token.get_secret_value():
        return 403
    expected = f"Bearer {settings.web.api_token.get_secret_value()}".encode()
    if header is None or not hmac.compare_digest(header.encode(), expected):
        return 401
    return None


def mount_snapshots(app: faust.App, settings: Settings, snapshotter: Snapshotter) -> None:
    """Add the endpoints, the schedule and the maintenance timer to ``app``."""

    class SnapshotList(View):
        async def get(self, request: Any) -> Any:
            return self.json({"versions": [v.to_json() for v in await snapshotter.versions()]})

    class TableSnapshots(View):
        async def get(self, request: Any, table: str) -> Any:
            try:
                versions = await snapshotter.versions(table)
            except ConfigurationError as exc:
                return self.json({"error": str(exc)}, status=404)
            return self.json({"table": table, "versions": [v.to_json() for v in versions]})

        async def post(self, request: Any, table: str) -> Any:
            denied = authorized(settings, request.headers.get("Authorization"))
            if denied == 403:
                return self.json({"error": "taking snapshots over HTTP is disabled (no web.api_token)"}, status=403)
            if denied:
                return self.json({"error": "missing or wrong bearer token"}, status=401)
            try:
                table_spec(table)
                info = await snapshotter.start_live_version(table, trigger="manual")
            except ConfigurationError as exc:
                return self.json({"error": str(exc)}, status=404)
            except SnapshotError as exc:
                return self.json({"error": str(exc)}, status=500)
            return self.json(info.to_json(), status=202)

    app.page("/snapshots")(SnapshotList)
    app.page("/snapshots/{table}")(TableSnapshots)

    if settings.snapshots.schedule:
        cron = settings.snapshots.schedule

        @app.crontab(cron, timezone=UTC)
        async def _scheduled_versions() -> None:
            await snapshotter.take_scheduled(fire_time(cron, datetime.now(UTC)))

    async def maintain() -> None:
        try:
            await snapshotter.maintain()
        except Exception:  # noqa: BLE001 - the next pass retries; the worker's landing goes on
            logger.exception("snapshot maintenance failed")

    app.task(maintain)  # recovery at start
    app.timer(interval=settings.snapshots.maintenance_interval_s, name="txlake.snapshot_maintenance")(maintain)
