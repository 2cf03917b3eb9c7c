"""Replacing the file set of a day partition in one step, while the streaming sink keeps writing it.

Used by compaction (:mod:`app.lake.compaction`) and by stream exports (:mod:`app.exports.day_swap`),
on a local (or shared POSIX) lake:

1. the new day directory is assembled outside the dataset (under ``_txlake/…``): the new files,
   plus hard links of the live files that stay (every live file the caller's ``replaces``
   predicate does not claim);
2. ``renameat2(RENAME_EXCHANGE)`` swaps it with the live ``year=/month=/day=`` directory: a reader
   listing the day sees the old set of files or the new set, never a mix;
3. the old set now sits at the assembly path; :meth:`DaySwap.settle` moves into the live day any
   file that is neither replaced nor already there, and removes the rest.

Steps 1's linking and 2 run under the day's exclusive lock (:mod:`app.lake.day_lock`), which every
move of the streaming sink into the day takes shared: no file can land in the old directory
between the linking and the exchange, so a reader never misses one. Settling stays for recovery
and for writers that do not take the lock.

A reader that listed the day before the exchange and opens a replaced file after it gets "file
not found" (the path now names the new directory): it must list again. Open files stay readable.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.lake.day_lock import day_lock
from app.lake.sink import DayPartition
from app.lake.storage import LocalStorage

__all__ = ["DaySwap", "exchange"]

logger = logging.getLogger(__name__)

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_libc = ctypes.CDLL(None, use_errno=True)


def exchange(a: Path, b: Path) -> None:
    """Swap two directories atomically (Linux ``renameat2(RENAME_EXCHANGE)``)."""
    if _libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"renameat2 exchange {a} <-> {b}: {os.strerror(code)}")


@dataclass
class DaySwap:
    """Replace the files of ``dataset``'s days that ``replaces(name)`` claims, one exchange per day.

    ``work`` is a directory outside the dataset on the lake's file system; the new day is
    assembled at ``work/new/<day path>``.
    """

    root: Path
    dataset: str
    replaces: Callable[[str], bool]
    work: Path
    fsync: bool = True

    def live(self, day: DayPartition) -> Path:
        return self.root / self.dataset / day.path

    def assembled(self, day: DayPartition) -> Path:
        return self.work / "new" / day.path

    def live_files(self, day: DayPartition) -> list[str]:
        live = self.live(day)
        return sorted(entry.name for entry in os.scandir(live) if entry.is_file()) if live.is_dir() else []

    def replaced_files(self, day: DayPartition) -> list[str]:
        return [name for name in self.live_files(day) if self.replaces(name)]

    def apply(
        self,
        day: DayPartition,
        files: list[tuple[Path, str]],
        before_exchange: Callable[[DayPartition], None] | None = None,
        after_exchange: Callable[[DayPartition], None] | None = None,
    ) -> dict[str, int]:
        """Exchange the live day with its assembled replacement; returns file counts.

        ``files`` are ``(staged path, final name)`` of the new files. ``before_exchange`` runs
        under the lock right before the exchange (a journal entry), ``after_exchange`` right
        after it, before settling. Re-running an interrupted ``apply`` whose exchange has not
        happened (same files, staged or already assembled) finishes it; once it has, call
        :meth:`settle` instead.
        """
        new, live = self.assembled(day), self.live(day)
        new.mkdir(parents=True, exist_ok=True)
        for staged, name in files:
            if staged.exists():
                os.replace(staged, new / name)
        kept = replaced = 0
        with day_lock(self.root, self.dataset, day.path, exclusive=True):
            for name in self.live_files(day):
                if self.replaces(name):
                    replaced += 1
                    continue
                try:
                    os.link(live / name, new / name)
                except FileExistsError:
                    pass  # linked by an earlier, interrupted attempt
                except FileNotFoundError:
                    continue  # moved away meanwhile: settle() sorts it out
                kept += 1
            self._sync(new)
            if before_exchange is not None:
                before_exchange(day)
            if live.is_dir():
                exchange(new, live)
            else:
                live.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.rename(new, live)
                except OSError as exc:  # the day appeared just now
                    if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
                    exchange(new, live)
        self._sync(live.parent)
        if after_exchange is not None:
            after_exchange(day)
        self.settle(day)
        return {"written": len(files), "kept": kept, "replaced": replaced}

    def settle(self, day: DayPartition) -> None:
        """After an exchange: move stray files of the old set into the live day, drop the rest."""
        leftover, live = self.assembled(day), self.live(day)
        if not leftover.is_dir():
            return
        for entry in os.scandir(leftover):
            if entry.is_file() and not self.replaces(entry.name) and not (live / entry.name).exists():
                live.mkdir(parents=True, exist_ok=True)
                os.replace(entry.path, live / entry.name)
                logger.info("lake: kept %s that landed in %s during its exchange", entry.name, live)
        shutil.rmtree(leftover)

    def _sync(self, directory: Path) -> None:
        LocalStorage(self.root, self.fsync).sync_directory(str(directory.relative_to(self.root)))
