"""The worker's maintenance schedule: compaction of closed days and vacuum, in a subprocess.

Every ``lake.compaction.check_interval_ms`` (and once shortly after start) each worker runs
``txlake lake compact --closed --vacuum --json`` as a subprocess, unless its previous run is still
going. The subprocess takes a lease per dataset-day in the warehouse before touching a day
(:func:`app.lake.maintenance.run_maintenance`), so with several workers every closed day has
exactly one compactor, and the workers share the days out between them.

Why a subprocess: sorting and encoding Parquet is CPU- and memory-heavy; in its own process it
never blocks the worker's event loop (the streaming path's timers and heartbeats) nor grows the
worker's memory, and a compaction killed with it is finished by the next run (journal roll-forward).
On shutdown the subprocess gets SIGTERM: a day half-way is rolled forward or dropped by the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys

from app.core.metrics import LAKE_COMPACTED_ROWS, LAKE_COMPACTION_SECONDS, LAKE_COMPACTIONS, LAKE_VACUUMED_FILES
from app.core.settings import Settings

__all__ = ["MaintenanceSchedule"]

logger = logging.getLogger(__name__)


class MaintenanceSchedule:
    """Starts and follows the periodic maintenance subprocess of one worker."""

    def __init__(self, settings: Settings, command: list[str] | None = None) -> None:
        self.settings = settings
        self.command = command or [sys.executable, "-m", "app.ops.cli", "lake", "compact", "--closed", "--vacuum", "--json"]
        self.process: asyncio.subprocess.Process | None = None
        self.runs = 0

    @property
    def interval_s(self) -> float:
        return self.settings.lake.compaction.check_interval_ms / 1000

    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def run_once(self) -> int | None:
        """One maintenance pass (skipped if the previous one still runs); its exit status."""
        if self.running():
            logger.info("lake maintenance: the previous pass is still running; skipping this one")
            return None
        self.runs += 1
        self.process = await asyncio.create_subprocess_exec(
            *self.command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=dict(os.environ),
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        stderr = asyncio.ensure_future(self.process.stderr.read())
        async for line in self.process.stdout:
            with contextlib.suppress(ValueError):
                self._record(json.loads(line))
        code = await self.process.wait()
        if code != 0:
            tail = (await stderr).decode("utf-8", "replace").strip().splitlines()[-3:]
            logger.warning("lake maintenance pass ended with status %s: %s", code, " | ".join(tail))
        else:
            stderr.cancel()
        return code

    def _record(self, event: dict) -> None:
        if event.get("kind") == "vacuum":
            LAKE_VACUUMED_FILES.labels(event["dataset"]).inc(event.get("removed_files", 0))
            if event.get("removed_files") or event.get("rolled_forward"):
                logger.info("lake vacuum of %s: %s", event["dataset"], event)
            return
        dataset, status = event.get("dataset", "?"), event.get("status", "?")
        LAKE_COMPACTIONS.labels(dataset, status).inc()
        if status == "compacted":
            LAKE_COMPACTED_ROWS.labels(dataset).inc(event.get("rows", 0))
            LAKE_COMPACTION_SECONDS.observe(event.get("seconds", 0.0))
            logger.info("lake compaction of %s %s: %s files -> %s files, %s rows in %.2fs", dataset, event.get("day"),
                        event.get("files_before"), event.get("files_after"), event.get("rows"), event.get("seconds", 0.0))
        elif status == "failed":
            logger.error("lake compaction of %s %s failed: %s", dataset, event.get("day"), event.get("reason"))

    async def run_forever(self, first_delay_s: float = 30.0) -> None:
        """Run a pass after ``first_delay_s``, then every interval, until cancelled."""
        await asyncio.sleep(first_delay_s)
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - maintenance must never take the worker down
                logger.exception("lake maintenance pass failed")
            await asyncio.sleep(self.interval_s)

    async def close(self) -> None:
        """Stop a running pass (SIGTERM, then SIGKILL after 30 s); safe by the compaction protocol."""
        if not self.running():
            return
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), 30)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()
