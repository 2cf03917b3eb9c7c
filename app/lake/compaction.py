"""Compaction of a hive day partition: many small files in, a few sorted files of a target size out.

One run compacts one (dataset, day) as *generation* ``G`` (``20261127T101500Z-3f9a1c``). Its
bookkeeping lives under ``_txlake/compaction/``::

    work/<dataset>/<day>/<G>/compacted-<G>-00000.parquet   outputs, staged (invisible to readers)
    active/<dataset>/<day>/<G>.json                        the journal: present from commit to finish
    days/<dataset>/<day>.json                              the day's record: last runs, files/bytes before/after

Protocol (each step is a checkpoint a test can SIGKILL the process at, see :data:`STEPS`):

1. **recover** -- finish any active journal of the day (below) and drop uncommitted work.
2. **plan** -- list the day; the candidates are the files below ``target_file_bytes`` named like
   the sink's (``<topic>+<p>+<offset>.parquet``) or like compaction's, except a file whose batch
   is still being moved in (its ledger lists the move and the staged source still exists).
   Fewer than ``min_files`` candidates: nothing to do.
3. **rewrite** -- read the candidates, sort, write the outputs under ``work/`` (fsync), check
   that they hold as many rows as the candidates. *staged*
4. **commit** -- check the lease (``fence``), then write the journal -- replaced names, output
   names -- atomically. **This is the commit point.** *committed*
5. **swap** -- make the outputs visible and the replaced files invisible:
   local: one ``renameat2`` exchange of the day directory (:mod:`app.lake.day_swap`: the
   outputs plus hard links of every other live file, under the day lock the sink's moves take):
   readers see the old set or the new set, never both, never neither. *swapping* (assembled,
   before the exchange), *swapped* (after it, before settling).
   S3: delete the replaced objects, then copy each output to its final key. No S3 operation
   changes several objects at once: a plain listing never sees a row twice, but misses the
   replaced rows from the first delete until the last copy (a fraction of a second for a few
   files); readers that go through :mod:`app.lake.snapshot` read the journal and see every row.
   *swapping* (after the first delete), *swapped* (after the copies).
6. **finish** -- write the day record, *recorded*, delete the journal and the work directory.

Recovery: a crash before 4 leaves only work (removed by the next run of the day, or by vacuum);
a crash after 4 is rolled forward by the next run of the day, by ``txlake lake compact``, or by
vacuum: local -- if the outputs are in the live day the exchange happened, settle; else assemble
again (outputs staged or already assembled) and exchange; S3 -- delete and copy again (both
idempotent).

Exactly once around the sink: the sink only *adds* files to a day (moves of committed batches);
compaction replaces a fixed set of files it listed, so a file that lands during a run is never
touched (local: linked into the new directory, or landing in it after the exchange; S3: another
key). A file is compacted only once its batch's move is finished, so the sink's roll-forward can
never move it in again after compaction removed it. Compaction never touches the ledgers.

Who runs it: :mod:`app.lake.maintenance` holds the dataset lock (local lakes: exports and
compaction of a dataset one at a time) and a lease per dataset-day (one owner across workers);
``fence`` raises :class:`LeaseLost` when that lease is gone, checked right before the commit.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyarrow import fs as pafs

from app.core.errors import TxlakeError
from app.core.settings import LakeSettings
from app.lake.day_lock import move_into_day
from app.lake.day_swap import DaySwap
from app.lake.files import list_tree, native, remove_tree
from app.lake.ledger import LakeLedger
from app.lake.rewrite import read_sources, rewrite_sorted
from app.lake.sink import DATA_FILE_NAME, DayPartition
from app.lake.storage import CONTROL_DIR, LakeStorage, LocalStorage

__all__ = [
    "COMPACTED_FILE_NAME",
    "STEPS",
    "CompactionError",
    "CompactionJournal",
    "DayFile",
    "DayResult",
    "HiveCompactor",
    "LeaseLost",
    "active_journals",
    "is_compacted_file",
    "read_day_record",
]

logger = logging.getLogger(__name__)

COMPACTED_FILE_NAME = re.compile(r"^compacted-(?P<generation>\d{8}T\d{6}Z-[0-9a-f]{6})-(?P<index>\d{5})\.parquet$")
STEPS = ("staged", "committed", "swapping", "swapped", "recorded")
KILL_ENV = "TXLAKE_TEST_COMPACTION_KILL_AT"
"""Test hook: ``TXLAKE_TEST_COMPACTION_KILL_AT=<step>`` SIGKILLs the process at that checkpoint."""
_HISTORY = 10


class CompactionError(TxlakeError):
    """A compaction could not be done; nothing visible changed unless the message says so."""


class LeaseLost(CompactionError):
    """The lease on the dataset-day was lost before the commit point: the run was abandoned."""


def is_compacted_file(name: str) -> bool:
    """Whether a file name is one compaction writes (``compacted-<generation>-<n>.parquet``)."""
    return COMPACTED_FILE_NAME.match(name) is not None


def _checkpoint(step: str) -> None:
    if os.environ.get(KILL_ENV) == step:
        logger.warning("compaction: killed at step %r (%s)", step, KILL_ENV)
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def new_generation() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def _active_prefix(dataset: str) -> str:
    return f"{CONTROL_DIR}/compaction/active/{dataset}"


def _active_key(dataset: str, day: DayPartition, generation: str) -> str:
    return f"{_active_prefix(dataset)}/{day.path}/{generation}.json"


def _record_key(dataset: str, day: DayPartition) -> str:
    return f"{CONTROL_DIR}/compaction/days/{dataset}/{day.path}.json"


def _work_day(dataset: str, day: DayPartition) -> str:
    return f"{CONTROL_DIR}/compaction/work/{dataset}/{day.path}"


@dataclass(frozen=True)
class DayFile:
    """A file in a day directory."""

    name: str
    size: int
    mtime: float  # seconds since the epoch


@dataclass
class CompactionJournal:
    """What a committed compaction replaces with what: the commit record of one generation."""

    dataset: str
    day: str  # year=YYYY/month=MM/day=DD
    generation: str
    replaced: list[str]
    outputs: list[str]
    rows: int
    before: dict[str, int]  # the day's files and bytes before the run
    after: dict[str, int]  # ... and after it
    owner: str
    started_at: str
    committed_at: str

    @property
    def partition(self) -> DayPartition:
        return DayPartition.parse(self.day)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> CompactionJournal:
        return cls(**json.loads(data))


@dataclass
class DayResult:
    """What one run did to one day (``status``: compacted, skipped, busy, failed)."""

    dataset: str
    day: str
    status: str
    reason: str = ""
    files_before: int = 0
    bytes_before: int = 0
    files_after: int = 0
    bytes_after: int = 0
    rows: int = 0
    replaced: int = 0
    written: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    generation: str | None = None
    recovered: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def active_journals(storage: LakeStorage, dataset: str, day: DayPartition | None = None) -> list[CompactionJournal]:
    """The committed, unfinished compactions of ``dataset`` (of one day, or all), oldest first."""
    prefix = _active_prefix(dataset) + (f"/{day.path}" if day else "")
    journals = []
    for entry in list_tree(storage, prefix):
        if entry.path.endswith(".json"):
            data = storage.read(entry.path)
            if data is not None:
                journals.append(CompactionJournal.from_json(data))
    return sorted(journals, key=lambda j: (j.day, j.generation))


def read_day_record(storage: LakeStorage, dataset: str, day: DayPartition) -> dict[str, Any] | None:
    """The day's compaction record (``last`` run and ``history``), None if never compacted."""
    data = storage.read(_record_key(dataset, day))
    return None if data is None else json.loads(data)


def list_day_files(storage: LakeStorage, dataset: str) -> dict[DayPartition, list[DayFile]]:
    """Every data file of a stream dataset by day, with size and modification time (one listing)."""
    filesystem, root = native(storage, dataset)
    selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
    days: dict[DayPartition, list[DayFile]] = {}
    for info in filesystem.get_file_info(selector):
        if info.type != pafs.FileType.File or not info.base_name.endswith(".parquet"):
            continue
        parts = info.path[len(root):].strip("/").split("/")
        if len(parts) != 4:
            continue
        try:
            day = DayPartition.parse("/".join(parts[:3]))
        except (KeyError, ValueError):
            continue
        mtime = info.mtime.timestamp() if info.mtime is not None else 0.0
        days.setdefault(day, []).append(DayFile(parts[3], info.size or 0, mtime))
    return days


class HiveCompactor:
    """Compacts day partitions of the hive Parquet lake (the protocol in the module docstring).

    Not thread-safe for one (dataset, day): the caller holds the dataset lock and the day's lease.
    """

    def __init__(self, storage: LakeStorage, lake: LakeSettings) -> None:
        self.storage = storage
        self.settings = lake.compaction
        codec = self.settings.compression or lake.compression
        self.compression = None if codec == "none" else codec
        self.owner = _owner()

    # ------------------------------------------------------------------------------ planning

    def day_files(self, dataset: str, day: DayPartition) -> list[DayFile]:
        filesystem, root = native(self.storage, f"{dataset}/{day.path}")
        selector = pafs.FileSelector(root, recursive=False, allow_not_found=True)
        return sorted(
            (
                DayFile(info.base_name, info.size or 0, info.mtime.timestamp() if info.mtime else 0.0)
                for info in filesystem.get_file_info(selector)
                if info.type == pafs.FileType.File and info.base_name.endswith(".parquet")
            ),
            key=lambda f: f.name,
        )

    def candidates(self, dataset: str, day: DayPartition, files: list[DayFile]) -> list[DayFile]:
        """The files a run would rewrite (see step 2); may be fewer than ``min_files``."""
        small = [
            f for f in files
            if f.size < self.settings.target_file_bytes and (DATA_FILE_NAME.match(f.name) or is_compacted_file(f.name))
        ]
        moving = self._being_moved_in(dataset, day, small)
        return [f for f in small if f.name not in moving]

    def needs_compaction(self, dataset: str, day: DayPartition, files: list[DayFile]) -> bool:
        """Whether the day has enough small files to be worth a run (listing only, no ledger reads)."""
        small = [f for f in files if f.size < self.settings.target_file_bytes
                 and (DATA_FILE_NAME.match(f.name) or is_compacted_file(f.name))]
        return len(small) >= self.settings.min_files

    def _being_moved_in(self, dataset: str, day: DayPartition, files: list[DayFile]) -> set[str]:
        names = {f.name for f in files}
        partitions = {(m["topic"], int(m["partition"])) for f in files if (m := DATA_FILE_NAME.match(f.name))}
        prefix = f"{dataset}/{day.path}/"
        moving = set()
        for topic, partition in sorted(partitions):
            for staged, final in LakeLedger(self.storage).entry(dataset, topic, partition).moves:
                name = final[len(prefix):]
                if final.startswith(prefix) and name in names and self.storage.exists(staged):
                    moving.add(name)
        return moving

    # ------------------------------------------------------------------------------ one day

    def compact_day(self, dataset: str, day: DayPartition, fence: Callable[[], None] = lambda: None) -> DayResult:
        """Compact one day (steps 1-6). Raises :class:`LeaseLost`, :class:`CompactionError`, OSError."""
        started, cpu, started_at = time.monotonic(), time.process_time(), _now()
        recovered = self.recover_day(dataset, day)
        files = self.day_files(dataset, day)
        result = DayResult(dataset, str(day), "skipped", files_before=len(files),
                           bytes_before=sum(f.size for f in files), recovered=recovered)
        result.files_after, result.bytes_after = result.files_before, result.bytes_before
        chosen = self.candidates(dataset, day, files)
        if len(chosen) < self.settings.min_files:
            result.reason = f"{len(chosen)} file(s) below the target size, fewer than min_files={self.settings.min_files}"
            return result
        generation = new_generation()
        work = f"{_work_day(dataset, day)}/{generation}"
        self.storage.makedirs(work)
        try:
            sources = read_sources(self.storage, [f"{dataset}/{day.path}/{f.name}" for f in chosen])
            written = rewrite_sorted(
                self.storage, sources, work, lambda i: f"compacted-{generation}-{i:05d}.parquet",
                sort_columns=self.settings.sort_columns, target_bytes=self.settings.target_file_bytes,
                memory_bytes=self.settings.memory_bytes, compression=self.compression,
            )
            self.storage.sync_directory(work)
            _checkpoint("staged")
            replaced = {f.name for f in chosen}
            kept = [f for f in files if f.name not in replaced]
            journal = CompactionJournal(
                dataset=dataset, day=day.path, generation=generation,
                replaced=sorted(replaced), outputs=[w.path.rsplit("/", 1)[1] for w in written],
                rows=sum(w.rows for w in written),
                before={"files": len(files), "bytes": sum(f.size for f in files)},
                after={"files": len(kept) + len(written), "bytes": sum(f.size for f in kept) + sum(w.size for w in written)},
                owner=self.owner, started_at=started_at, committed_at=_now(),
            )
            fence()
            if active_journals(self.storage, dataset, day):
                raise CompactionError(f"{dataset} {day}: another compaction committed meanwhile; this run is dropped")
            key = _active_key(dataset, day, generation)
            self.storage.makedirs(key.rsplit("/", 1)[0])
            self.storage.write_atomic(key, journal.to_json())  # the commit point
        except BaseException:
            self._drop_work(work)
            raise
        _checkpoint("committed")
        self._swap(journal)
        self._finish(journal)
        result.status, result.generation = "compacted", generation
        result.files_after, result.bytes_after = journal.after["files"], journal.after["bytes"]
        result.rows, result.replaced, result.written = journal.rows, len(journal.replaced), len(journal.outputs)
        result.seconds, result.cpu_seconds = time.monotonic() - started, time.process_time() - cpu
        logger.info("compaction: %s %s: %d files (%d bytes) -> %d files (%d bytes), %d rows in %.2fs",
                    dataset, day, result.files_before, result.bytes_before, result.files_after,
                    result.bytes_after, result.rows, result.seconds)
        return result

    def recover_day(self, dataset: str, day: DayPartition) -> int:
        """Roll forward the day's committed compactions and drop uncommitted work; returns how many rolled."""
        journals = active_journals(self.storage, dataset, day)
        for journal in journals:
            logger.warning("compaction: finishing the interrupted run %s of %s %s", journal.generation, dataset, day)
            self._swap(journal)
            self._finish(journal)
        self._drop_work(_work_day(dataset, day))
        return len(journals)

    # ------------------------------------------------------------------------------ swap / finish

    def _swap(self, journal: CompactionJournal) -> None:
        """Step 5, idempotent: run it again after a crash and it finishes."""
        work = f"{_work_day(journal.dataset, journal.partition)}/{journal.generation}"
        if isinstance(self.storage, LocalStorage):
            self._swap_local(journal, work)
        else:
            self._swap_objects(journal, work)

    def _swap_local(self, journal: CompactionJournal, work: str) -> None:
        assert isinstance(self.storage, LocalStorage)
        root, day = self.storage.root, journal.partition
        replaced = set(journal.replaced)
        swap = DaySwap(root, journal.dataset, replaced.__contains__, root / work, self.storage.fsync)
        live = swap.live(day)
        if all((live / name).exists() for name in journal.outputs):
            swap.settle(day)  # the exchange happened before a crash
            return
        files = [(root / work / name, name) for name in journal.outputs]
        missing = [name for path, name in files if not path.exists() and not (swap.assembled(day) / name).exists()]
        if missing:
            raise CompactionError(f"{journal.dataset} {day}: committed outputs {missing} are missing")
        swap.apply(day, files, before_exchange=lambda _: _checkpoint("swapping"),
                   after_exchange=lambda _: _checkpoint("swapped"))

    def _swap_objects(self, journal: CompactionJournal, work: str) -> None:
        base = f"{journal.dataset}/{journal.day}"
        for i, name in enumerate(journal.replaced):
            self.storage.delete(f"{base}/{name}")
            if i == 0:
                _checkpoint("swapping")
        for name in journal.outputs:
            if not self.storage.move(f"{work}/{name}", f"{base}/{name}") and not self.storage.exists(f"{base}/{name}"):
                raise CompactionError(f"{journal.dataset} {journal.day}: committed output {name} is missing")
        _checkpoint("swapped")

    def _finish(self, journal: CompactionJournal) -> None:
        day = journal.partition
        record = read_day_record(self.storage, journal.dataset, day) or {"dataset": journal.dataset, "day": journal.day}
        run = {k: v for k, v in asdict(journal).items() if k not in ("replaced", "outputs")}
        run.update(replaced_files=len(journal.replaced), outputs=journal.outputs, finished_at=_now())
        history = [r for r in record.get("history", []) if r.get("generation") != journal.generation]
        record["last"] = run
        record["history"] = [run, *history][:_HISTORY]
        key = _record_key(journal.dataset, day)
        self.storage.makedirs(key.rsplit("/", 1)[0])
        self.storage.write_atomic(key, json.dumps(record, indent=1).encode())
        _checkpoint("recorded")
        self.storage.delete(_active_key(journal.dataset, day, journal.generation))
        self._drop_work(f"{_work_day(journal.dataset, day)}/{journal.generation}")
        if isinstance(self.storage, LocalStorage):  # object stores have no empty directories to leave behind
            for kind in ("active", "work"):
                _prune_empty(self.storage.root / CONTROL_DIR / "compaction" / kind, f"{journal.dataset}/{journal.day}")

    def _drop_work(self, work: str) -> None:
        try:
            if isinstance(self.storage, LocalStorage):
                shutil.rmtree(self.storage.root / work, ignore_errors=True)
            else:
                remove_tree(self.storage, work)
        except OSError as exc:
            logger.warning("compaction: could not remove %s: %s", work, exc)

    # ------------------------------------------------------------------------------ vacuum

    def vacuum(self, dataset: str, retention_s: float) -> dict[str, int]:
        """Remove what crashed writers of ``dataset`` left behind, older than ``retention_s``.

        The caller first rolls committed compactions forward (:meth:`recover_day` of each day of
        :func:`active_journals`, under each day's lease). This rolls every ledger's recorded
        moves forward (the sink's own idempotent recovery), so nothing committed is removed, then
        deletes compaction work and the sink's uncommitted staged files older than ``retention_s``
        (keep it above ``lake.staging_grace_s``: a younger staged file may be a live batch).
        """
        rolled = removed = removed_bytes = 0
        ledgers = f"{CONTROL_DIR}/ledger/{dataset}"
        for entry in list_tree(self.storage, ledgers):
            topic, _, name = entry.path[len(ledgers) + 1:].rpartition("/")
            if not name.endswith(".json") or not name[:-5].isdigit():
                continue
            for staged, final in LakeLedger(self.storage).entry(dataset, topic, int(name[:-5])).moves:
                rolled += move_into_day(self.storage, staged, final)
        for prefix in (f"{CONTROL_DIR}/compaction/work/{dataset}", f"{CONTROL_DIR}/staging/{dataset}"):
            for entry in list_tree(self.storage, prefix):
                if self.storage.age_s(entry.path) >= retention_s:
                    self.storage.delete(entry.path)
                    removed += 1
                    removed_bytes += entry.size
        if isinstance(self.storage, LocalStorage):
            _remove_empty_dirs(self.storage.root / CONTROL_DIR / "compaction" / "work" / dataset)
        return {"rolled_forward": rolled, "removed_files": removed, "removed_bytes": removed_bytes}


def _prune_empty(base: Path, relative: str) -> None:
    """Remove ``base/relative`` and its parents up to ``base`` while they are empty."""
    path = base / relative
    while path != base and path.is_relative_to(base):
        try:
            path.rmdir()
        except OSError:  # not empty, or gone
            if path.exists():
                return
        path = path.parent


def _remove_empty_dirs(top: Path) -> None:
    if not top.is_dir():
        return
    for directory, _subdirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
        try:
            os.rmdir(directory)
        except OSError:
            pass

