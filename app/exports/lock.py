"""The dataset lock of exports: :mod:`app.lake.dataset_lock` (shared with compaction)."""

from __future__ import annotations

from app.lake.dataset_lock import DatasetBusy, DatasetLock

__all__ = ["DatasetBusy", "DatasetLock"]
