"""One rewrite of a dataset at a time (a stream export or a compaction), across processes.

An exclusive ``flock`` on a lock file. Stream exports and compaction both replace day
directories of a dataset; holding this lock they never interleave (issue 14: "an export and a
compaction of the same day: one at a time").

The lock lives beside the lake's bookkeeping (``<lake>/_txlake/exports/locks/``) when the lake
is a local (or shared POSIX) directory, so every worker and every ``txlake export`` on the
same lake see it; for an S3 lake it is in the local ``datadir`` (one host). The kernel drops it
when the holder dies, even by SIGKILL: a killed export never blocks the next one.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from app.core.errors import TxlakeError
from app.core.settings import Settings

__all__ = ["DatasetBusy", "DatasetLock"]


class DatasetBusy(TxlakeError):
    """Another export or compaction of the same dataset is running."""


class DatasetLock:
    """``with DatasetLock(settings, dataset):`` -- raises :class:`DatasetBusy` at once if held."""

    def __init__(self, settings: Settings, dataset: str) -> None:
        base = settings.datadir if settings.lake.is_s3 else Path(settings.lake.root) / "_txlake"
        self.path = base / "exports" / "locks" / (dataset.replace("/", "__") + ".lock")
        self.dataset = dataset
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DatasetBusy(f"{self.dataset} is busy: an export or a compaction of it is running") from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def held_elsewhere(self) -> bool:
        """Whether another process holds the lock now (a probe: acquires and releases at once)."""
        try:
            self.acquire()
        except DatasetBusy:
            return True
        self.release()
        return False

    def __enter__(self) -> DatasetLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
