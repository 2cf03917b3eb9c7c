"""Replacing a lake day partition of a stream dataset while the streaming lake sink keeps writing it.

How a stream export and the streaming path (:mod:`app.lake.sink`) coexist, without a lock
between them:

* **The cut.** Before querying ksqlDB the export reads, per Kafka partition, the lake ledger's
  ``landed_through`` (after rolling forward the moves the ledger records, exactly as the sink's
  own recovery would: idempotent). That is the cut ``C[p]``. The export owns offsets ``≤ C[p]``;
  the streaming path owns offsets ``> C[p]``: exported rows above the cut are dropped (the
  streaming path lands them, or already did).
* **File names tell the owner.** The sink names a file ``<topic>+<partition>+<first offset>``
  and commits batches in offset order, each beyond the ledger; a file whose first offset is
  ``≤ C[p]`` therefore holds only offsets ``≤ C[p]`` (the export replaces it), one whose first
  offset is ``> C[p]`` only offsets ``> C[p]`` (kept as is). Exported files use the same naming.
* **One atomic exchange per day.** The new day directory is assembled under
  ``_txlake/exports/work/…``: the exported files plus hard links of the live files that are kept.
  Then ``renameat2(RENAME_EXCHANGE)`` swaps it with the live ``year=/month=/day=`` directory in
  one step: a reader listing the day sees the old set of files or the new set, never a mix. A
  file the streaming path moved into the day in the instant between assembling and exchanging
  ends up in the old directory; :meth:`DaySwap.settle` moves it into the live day right after
  (so such a file can be missing from a listing for that instant -- never duplicated, never lost).
* **Crash safety.** The work directory's journal names each day before its exchange;
  :func:`recover_work` settles or discards whatever a killed export left (run at the start of
  every export of the dataset). Before the first exchange nothing visible has changed.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from app.lake.ledger import LedgerEntry
from app.lake.sink import DayPartition
from app.lake.storage import CONTROL_DIR, LocalStorage

__all__ = ["DaySwap", "FILE_NAME", "cut_of", "exchange", "recover_work", "work_root"]

logger = logging.getLogger(__name__)

FILE_NAME = re.compile(r"^(?P<topic>.+)\+(?P<partition>\d+)\+(?P<start>\d+)\.parquet$")
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_libc = ctypes.CDLL(None, use_errno=True)


def exchange(a: Path, b: Path) -> None:
    """Swap two directories atomically (Linux ``renameat2(RENAME_EXCHANGE)``)."""
    if _libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"renameat2 exchange {a} <-> {b}: {os.strerror(code)}")


def work_root(root: Path, dataset: str) -> Path:
    """Where the exports of ``dataset`` stage their files (never under the dataset itself)."""
    return root / CONTROL_DIR / "exports" / "work" / dataset.replace("/", "__")


def cut_of(root: Path, dataset: str, topic: str) -> dict[int, int]:
    """``{partition: landed_through}`` from the lake ledgers, after finishing their recorded moves."""
    ledgers = root / CONTROL_DIR / "ledger" / dataset / topic
    cut: dict[int, int] = {}
    if not ledgers.is_dir():
        return cut
    for path in ledgers.glob("*.json"):
        entry = LedgerEntry.from_json(path.read_bytes())
        for staged, final in entry.moves:  # the sink's own roll-forward, idempotent
            source, target = root / staged, root / final
            if source.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.replace(source, target)
                except FileNotFoundError:
                    pass  # the sink moved it in the meantime
        cut[int(path.stem)] = entry.landed_through
    return cut


def _owned_by_export(name: str, topic: str, cut: dict[int, int]) -> bool:
    """Whether live file ``name`` holds only offsets at or below the cut (the export replaces it)."""
    match = FILE_NAME.match(name)
    if match is None or match.group("topic") != topic:
        return False  # not a file of this feed's naming: left alone
    return int(match.group("start")) <= cut.get(int(match.group("partition")), -1)


@dataclass
class DaySwap:
    """Replace one day of ``dataset``: exported files in, files at or below the cut out."""

    root: Path
    dataset: str
    topic: str
    cut: dict[int, int]
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
        return [name for name in self.live_files(day) if _owned_by_export(name, self.topic, self.cut)]

    def apply(self, day: DayPartition, files: list[tuple[Path, str]]) -> dict[str, int]:
        """Exchange the live day with its assembled replacement; returns file counts."""
        new, live = self.assembled(day), self.live(day)
        new.mkdir(parents=True, exist_ok=True)
        for staged, name in files:
            os.replace(staged, new / name)
        kept = replaced = 0
        for name in self.live_files(day):
            if _owned_by_export(name, self.topic, self.cut):
                replaced += 1
            else:
                try:
                    os.link(live / name, new / name)
                    kept += 1
                except FileNotFoundError:
                    pass  # moved away meanwhile: settle() sorts it out
        self._sync(new)
        self._journal(day, "exchanging")
        if live.is_dir():
            exchange(new, live)
        else:
            live.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(new, live)
            except OSError as exc:  # the sink created the day just now
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                exchange(new, live)
        self._sync(live.parent)
        self.settle(day)
        self._journal(day, "done")
        return {"written": len(files), "kept": kept, "replaced": replaced}

    def settle(self, day: DayPartition) -> None:
        """After an exchange (or instead of one): move stray streaming files into the live day, drop the rest."""
        leftover, live = self.assembled(day), self.live(day)
        if not leftover.is_dir():
            return
        for entry in os.scandir(leftover):
            if entry.is_file() and not _owned_by_export(entry.name, self.topic, self.cut) \
                    and not (live / entry.name).exists():
                live.mkdir(parents=True, exist_ok=True)
                os.replace(entry.path, live / entry.name)
                logger.info("export: kept %s that landed during the swap of %s", entry.name, live)
        shutil.rmtree(leftover)

    def _sync(self, directory: Path) -> None:
        LocalStorage(self.root, self.fsync).sync_directory(str(directory.relative_to(self.root)))

    def _journal(self, day: DayPartition, state: str) -> None:
        path = self.work / "journal.json"
        journal = json.loads(path.read_text()) if path.exists() else {
            "dataset": self.dataset, "topic": self.topic, "cut": self.cut, "days": {}}
        journal["days"][day.path] = state
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(journal))
        os.replace(tmp, path)


def recover_work(root: Path, dataset: str) -> int:
    """Settle or discard what killed exports of ``dataset`` left behind; returns how many.

    Call only while holding the dataset's export lock (no export of it is running).
    """
    base = work_root(root, dataset)
    if not base.is_dir():
        return 0
    count = 0
    for work in base.iterdir():
        journal_path = work / "journal.json"
        if journal_path.exists():
            journal = json.loads(journal_path.read_text())
            swap = DaySwap(root, journal["dataset"], journal["topic"],
                           {int(p): int(o) for p, o in journal["cut"].items()}, work)
            for day_path, state in journal["days"].items():
                if state == "exchanging":
                    year, month, day = (int(part.split("=")[1]) for part in day_path.split("/"))
                    swap.settle(DayPartition(year, month, day))
        shutil.rmtree(work, ignore_errors=True)
        logger.warning("export: cleaned up the work of an interrupted export (%s)", work.name)
        count += 1
    return count

