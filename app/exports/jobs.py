"""The worker's running exports: each one is a ``txlake export`` subprocess it follows.

A subprocess keeps an export's parsing and Parquet encoding off the worker's event loop (the
streaming path's timers and heartbeats) and out of its memory; killing it can never leave the
worker half-way. Its ``--progress json`` lines update the job's :class:`ExportStatus`; a
subprocess that dies without a final status (killed, OOM) makes the job ``failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import uuid

from app.core.metrics import EXPORT_DURATION, EXPORT_ROWS, EXPORTS
from app.core.settings import Settings
from app.exports.lock import DatasetBusy, DatasetLock
from app.exports.request import ExportRequest
from app.exports.status import ExportStatus

__all__ = ["ExportJobs"]

logger = logging.getLogger(__name__)
_KEEP_FINISHED = 100


class _Job:
    def __init__(self, request: ExportRequest, status: ExportStatus, process: asyncio.subprocess.Process) -> None:
        self.request, self.status, self.process = request, status, process
        self.follower: asyncio.Task[None] | None = None


class ExportJobs:
    """Starts, follows and cancels export subprocesses; one running export per dataset."""

    def __init__(self, settings: Settings, command: list[str] | None = None) -> None:
        self.settings = settings
        self.command = command or [sys.executable, "-m", "app.ops.cli", "export"]
        self.jobs: dict[str, _Job] = {}

    def running(self, dataset: str) -> _Job | None:
        for job in self.jobs.values():
            if job.request.dataset == dataset and job.status.state == "running":
                return job
        return None

    async def start(self, request: ExportRequest) -> ExportStatus:
        """Start an export; raises :class:`DatasetBusy` if one of the same dataset runs (here or elsewhere)."""
        if self.running(request.dataset) or DatasetLock(self.settings, request.dataset).held_elsewhere():
            raise DatasetBusy(f"an export of {request.dataset} is already running")
        export_id = uuid.uuid4().hex
        args = [*self.command, request.kind, request.source, "--id", export_id, "--progress", "json"]
        if request.range is not None:
            args += ["--from-day", request.range.from_day.isoformat(), "--to-day", request.range.to_day.isoformat()]
        process = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=dict(os.environ),
        )
        status = ExportStatus(export_id, request.source, request.kind)
        job = self.jobs[export_id] = _Job(request, status, process)
        job.follower = asyncio.get_running_loop().create_task(self._follow(job))
        self._forget_old()
        return status

    def get(self, export_id: str) -> ExportStatus | None:
        job = self.jobs.get(export_id)
        return job.status if job else None

    def cancel(self, export_id: str) -> ExportStatus | None:
        """Ask the export to stop (SIGTERM): it cancels unless it is already making its result visible."""
        job = self.jobs.get(export_id)
        if job is None:
            return None
        if job.status.state == "running":
            with contextlib.suppress(ProcessLookupError):
                job.process.send_signal(signal.SIGTERM)
        return job.status

    async def close(self) -> None:
        """Cancel every running export and wait for them (worker shutdown)."""
        for export_id, job in list(self.jobs.items()):
            if job.status.state == "running":
                self.cancel(export_id)
        followers = [job.follower for job in self.jobs.values() if job.follower is not None]
        await asyncio.gather(*followers, return_exceptions=True)

    async def _follow(self, job: _Job) -> None:
        assert job.process.stdout is not None and job.process.stderr is not None
        stderr = asyncio.ensure_future(job.process.stderr.read())
        async for line in job.process.stdout:
            with contextlib.suppress(ValueError):
                job.status.update(json.loads(line))
        code = await job.process.wait()
        errors = (await stderr).decode("utf-8", "replace").strip().splitlines()
        if job.status.state == "running":
            job.status.finish("failed", f"export process ended with status {code}: {' | '.join(errors[-3:])}")
        EXPORTS.labels(job.request.kind, job.status.state).inc()
        EXPORT_ROWS.labels(job.request.kind).inc(job.status.rows)
        EXPORT_DURATION.labels(job.request.kind).observe(job.status.elapsed_s)
        logger.info("export %s of %s: %s (%d rows)", job.status.id, job.request.source, job.status.state, job.status.rows)

    def _forget_old(self) -> None:
        finished = [key for key, job in self.jobs.items() if job.status.state != "running"]
        for key in finished[:-_KEEP_FINISHED]:
            del self.jobs[key]
