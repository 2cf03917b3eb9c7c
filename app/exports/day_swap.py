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
* **Compacted files** (``part-…`` from :mod:`app.lake.compaction`) hold only offsets that had
  landed before the export took the dataset lock (compaction holds the same lock), so they are
  at or below the cut: the export replaces them too.
* **One atomic exchange per day** (:class:`app.lake.day_swap.DaySwap`). The new day directory is
  assembled under ``_txlake/exports/work/…``: the exported files plus hard links of the live files
  that are kept. Then ``renameat2(RENAME_EXCHANGE)`` swaps it with the live ``year=/month=/day=``
  directory in one step, under the day's exclusive lock that the sink's moves take shared: a
  reader listing the day sees the old set of files or the new set, never a mix, never a gap.
* **Crash safety.** The work directory's journal names each day before its exchange;
  :func:`recover_work` settles or discards whatever a killed export left (run at the start of
  every export of the dataset). Before the first exchange nothing visible has changed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from app.lake.compaction import is_compacted_file
from app.lake.day_lock import move_into_day
from app.lake.day_swap import DaySwap
from app.lake.ledger import LedgerEntry
from app.lake.sink import DATA_FILE_NAME, DayPartition
from app.lake.storage import CONTROL_DIR, LocalStorage

__all__ = ["ExportDaySwap", "FILE_NAME", "cut_of", "owned_by_export", "recover_work", "work_root"]

logger = logging.getLogger(__name__)

FILE_NAME = DATA_FILE_NAME


def work_root(root: Path, dataset: str) -> Path:
    """Where the exports of ``dataset`` stage their files (never under the dataset itself)."""
    return root / CONTROL_DIR / "exports" / "work" / dataset.replace("/", "__")


def cut_of(root: Path, dataset: str, topic: str) -> dict[int, int]:
    """``{partition: landed_through}`` from the lake ledgers, after finishing their recorded moves."""
    ledgers = root / CONTROL_DIR / "ledger" / dataset / topic
    cut: dict[int, int] = {}
    if not ledgers.is_dir():
        return cut
    storage = LocalStorage(root, fsync=False)
    for path in ledgers.glob("*.json"):
        entry = LedgerEntry.from_json(path.read_bytes())
        for staged, final in entry.moves:  # the sink's own roll-forward, idempotent
            move_into_day(storage, staged, final)
        cut[int(path.stem)] = entry.landed_through
    return cut


def owned_by_export(name: str, topic: str, cut: dict[int, int]) -> bool:
    """Whether live file ``name`` holds only offsets at or below the cut (the export replaces it)."""
    if is_compacted_file(name):
        return True
    match = FILE_NAME.match(name)
    if match is None or match.group("topic") != topic:
        return False  # not a file of this feed's naming: left alone
    return int(match.group("start")) <= cut.get(int(match.group("partition")), -1)


@dataclass
class ExportDaySwap(DaySwap):
    """A :class:`DaySwap` that replaces the files at or below the export's cut, with a journal."""

    topic: str = ""
    cut: dict[int, int] = field(default_factory=dict)

    @classmethod
    def for_export(cls, root: Path, dataset: str, topic: str, cut: dict[int, int], work: Path,
                   fsync: bool = True) -> ExportDaySwap:
        return cls(root, dataset, lambda name: owned_by_export(name, topic, cut), work, fsync, topic, cut)

    def apply_export(self, day: DayPartition, files: list[tuple[Path, str]]) -> dict[str, int]:
        """:meth:`DaySwap.apply` with the journal entries recovery needs (exchanging, done)."""
        counts = self.apply(day, files, before_exchange=lambda d: self._journal(d, "exchanging"))
        self._journal(day, "done")
        return counts

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
            swap = ExportDaySwap.for_export(root, journal["dataset"], journal["topic"],
                                            {int(p): int(o) for p, o in journal["cut"].items()}, work)
            for day_path, state in journal["days"].items():
                if state == "exchanging":
                    year, month, day = (int(part.split("=")[1]) for part in day_path.split("/"))
                    swap.settle(DayPartition(year, month, day))
        shutil.rmtree(work, ignore_errors=True)
        logger.warning("export: cleaned up the work of an interrupted export (%s)", work.name)
        count += 1
    return count
