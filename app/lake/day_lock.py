"""The lock that keeps a day directory's file set stable while it is exchanged (local lakes only).

A day partition of a local lake is replaced by one ``renameat2(RENAME_EXCHANGE)`` of its directory
(:mod:`app.lake.day_swap`: compaction and stream exports). The new directory is assembled first,
with hard links of the live files that stay; a file the streaming sink moved into the live
directory between that assembly and the exchange would end up in the old directory, invisible
until it is moved back. So every move *into* a day takes the day's lock shared, and an exchange
takes it exclusive for the few milliseconds of linking and renaming: a late file waits at most
that long, and a reader listing the day never misses it.

The lock is an ``flock`` on ``_txlake/locks/<dataset>/<YYYY-MM-DD>.lock`` under the lake root, so
every process on the lake's file system sees it (a shared POSIX volume included), and the kernel
drops it when its holder dies, even by SIGKILL. An S3 lake has no directory exchange and no lock:
:func:`day_lock` is then a no-op.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from app.lake.storage import CONTROL_DIR, LakeStorage, LocalStorage

__all__ = ["day_lock", "day_lock_path", "day_of_path", "move_into_day"]


def day_lock_path(root: Path, dataset: str, day_path: str) -> Path:
    """The lock file of ``dataset``'s day ``year=YYYY/month=MM/day=DD`` under a local lake ``root``."""
    year, month, day = (part.split("=", 1)[1] for part in day_path.split("/"))
    return root / CONTROL_DIR / "locks" / dataset / f"{year}-{month}-{day}.lock"


def day_of_path(path: str) -> tuple[str, str] | None:
    """``(dataset, "year=…/month=…/day=…")`` of a lake-relative data file path; None if not in a day."""
    parts = path.split("/")
    if len(parts) < 6 or not (parts[-4].startswith("year=") and parts[-3].startswith("month=") and parts[-2].startswith("day=")):
        return None
    return "/".join(parts[:-4]), "/".join(parts[-4:-1])


@contextlib.contextmanager
def day_lock(storage: LakeStorage | Path, dataset: str, day_path: str, *, exclusive: bool) -> Iterator[None]:
    """Hold the day's lock (shared: a move into the day; exclusive: an exchange of the day).

    ``storage`` is the lake (or a local root). Blocks until granted. No-op on object storage.
    """
    if isinstance(storage, LocalStorage):
        root = storage.root
    elif isinstance(storage, Path):
        root = storage
    else:
        yield
        return
    path = day_lock_path(root, dataset, day_path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def move_into_day(storage: LakeStorage, staged: str, final: str) -> bool:
    """:meth:`LakeStorage.move` of a data file into its day, holding the day's lock shared (local lakes).

    Returns what the move returns: False when ``staged`` is gone (moved before).
    """
    where = day_of_path(final) if isinstance(storage, LocalStorage) else None
    if where is None:
        return storage.move(staged, final)
    with day_lock(storage, *where, exclusive=False):
        return storage.move(staged, final)
