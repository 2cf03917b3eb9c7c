"""The lake sink: batches become Snappy Parquet files in hive day partitions, exactly once.

Layout (readers glob ``<root>/streams/<stream>/**/*.parquet`` with hive partitioning)::

    <root>/streams/<stream>/year=YYYY/month=MM/day=DD/<topic>+<partition>+<start offset>.parquet
    <root>/_txlake/ledger/streams/<stream>/<topic>/<partition>.json     offset ledger
    <root>/_txlake/staging/streams/<stream>/<topic>/<partition>/        files not yet committed

The day is the record's own ``event_timestamp`` in UTC, never the wall clock, so
a late event lands in its day. A batch that spans several days gives one file
per day; the file name is Kafka Connect's ``topic+partition+startOffset``.

Commit protocol for one batch of one (dataset, topic, partition):

1. write each day's rows to a staged file (``.parquet.tmp`` under ``_txlake``:
   no reader's glob sees it) and fsync it;
2. write the ledger -- ``landed_through`` = the batch's last offset, plus the
   list of staged → final moves -- to a temp file, fsync, rename over the old
   ledger. **This rename is the commit point**;
3. rename each staged file to its final name (each rename atomic).

The fsyncs (data files, ledger, ledger directory) make a landed batch survive a power
loss too; ``lake.fsync = false`` drops them (a process crash never loses page-cache
writes, so exactly-once holds either way).

A crash before 2 leaves only staged files, which the next start deletes; the
batch is replayed from Kafka. A crash after 2 is rolled forward at the next
start: the moves recorded in the ledger are finished before anything else
happens. Replayed records at or below ``landed_through`` are skipped. So every
record is in exactly one visible file, and a file is never visible half-written.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from app.errors import LakeSinkError
from app.sinks.base import Batch, Sink

__all__ = ["DayPartition", "LakeSink", "LedgerEntry", "ledger_path", "read_landed_through", "split_by_day"]

logger = logging.getLogger(__name__)

CONTROL_DIR = "_txlake"


@dataclass(frozen=True, slots=True)
class DayPartition:
    """A hive day partition of a dataset: ``year=YYYY/month=MM/day=DD``."""

    year: int
    month: int
    day: int

    @property
    def path(self) -> str:
        return f"year={self.year:04d}/month={self.month:02d}/day={self.day:02d}"


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """What the lake holds for one (dataset, topic, partition).

    ``landed_through`` is the highest offset covered; ``moves`` are the
    (staged, final) renames of the last committed batch, relative to the lake
    root, replayed by recovery if a crash interrupted them.
    """

    landed_through: int = -1
    moves: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> bytes:
        return json.dumps({"landed_through": self.landed_through, "moves": self.moves}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> LedgerEntry:
        raw = json.loads(data)
        return cls(int(raw["landed_through"]), tuple((str(s), str(f)) for s, f in raw.get("moves", ())))


def split_by_day(table: pa.Table) -> list[tuple[DayPartition, pa.Table]]:
    """Split rows by the UTC calendar day of ``event_timestamp`` (offset order kept)."""
    days = pc.cast(table.column("event_timestamp"), pa.date32())
    unique = pc.unique(days)
    if len(unique) == 1:
        slices = [(unique[0].as_py(), table)]
    else:
        slices = [(day.as_py(), table.filter(pc.equal(days, day))) for day in unique]
    return [(DayPartition(day.year, day.month, day.day), rows) for day, rows in sorted(slices)]


def ledger_path(root: Path, dataset: str, topic: str, partition: int) -> Path:
    """Where the ledger of (dataset, topic, partition) lives under the lake ``root``."""
    return Path(root) / CONTROL_DIR / "ledger" / dataset / topic / f"{partition}.json"


def read_landed_through(root: Path, dataset: str, topic: str, partition: int) -> int:
    """The committed ledger position, read without recovering anything (safe while a worker runs)."""
    path = ledger_path(root, dataset, topic, partition)
    try:
        return LedgerEntry.from_json(path.read_bytes()).landed_through
    except FileNotFoundError:
        return -1


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, data: bytes, fsync: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically (temp file, rename); durably with ``fsync``."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        if fsync:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)
    if fsync:
        _fsync_dir(path.parent)


class LakeSink(Sink):
    """Lands batches as Parquet files under ``root`` (see the module docstring for the protocol).

    Thread-safety: writes for different (dataset, topic, partition) may run
    concurrently; writes for the same one must not (each agent lands its
    partitions one batch at a time).
    """

    name = "lake"

    def __init__(self, root: Path, compression: str = "snappy", fsync: bool = True) -> None:
        self.root = Path(root)
        self.compression = None if compression == "none" else compression
        self.fsync = fsync
        self._ledgers: dict[tuple[str, str, int], LedgerEntry] = {}
        self._lock = threading.Lock()

    async def start(self) -> None:
        try:
            (self.root / CONTROL_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LakeSinkError(f"lake root {self.root} is not writable: {exc}") from exc

    async def probe(self) -> None:
        """Raise unless a small file can be written and removed under the lake root (readiness)."""

        def touch() -> None:
            probe = self.root / CONTROL_DIR / f".probe-{os.getpid()}"
            probe.parent.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"ok")
            probe.unlink()

        await asyncio.to_thread(touch)

    async def write(self, batch: Batch) -> int:
        try:
            return await asyncio.to_thread(self.write_sync, batch)
        except OSError as exc:
            raise LakeSinkError(f"batch {batch.describe()} to {batch.feed.dataset}: {exc}") from exc

    def landed_through(self, dataset: str, topic: str, partition: int) -> int:
        """The highest offset this sink holds for the partition (-1: none). Recovers first if needed."""
        return self._ledger(dataset, topic, partition).landed_through

    # -- the commit protocol, run in a worker thread -------------------------

    def write_sync(self, batch: Batch) -> int:
        dataset = batch.feed.dataset
        ledger = self._ledger(dataset, batch.topic, batch.partition)
        pending = batch.after(ledger.landed_through)
        if pending.last_offset <= ledger.landed_through:
            return 0
        staging = self._staging_dir(dataset, batch.topic, batch.partition)
        moves: list[tuple[str, str]] = []
        if pending.records:
            table = batch.feed.record_kind.to_table(
                pending.records, [batch.partition] * len(pending.records), pending.offsets
            )
            staging.mkdir(parents=True, exist_ok=True)
            for day, rows in split_by_day(table):
                start = pc.min(rows.column("_kafka_offset")).as_py()
                name = f"{batch.topic}+{batch.partition}+{start:020d}.parquet"
                staged = staging / (name + ".tmp")
                final = self.root / dataset / day.path / name
                with open(staged, "wb") as handle:
                    pq.write_table(rows, handle, compression=self.compression)
                    if self.fsync:
                        handle.flush()
                        os.fsync(handle.fileno())
                moves.append((str(staged.relative_to(self.root)), str(final.relative_to(self.root))))
        entry = LedgerEntry(pending.last_offset, tuple(moves))
        _write_durably(self._ledger_path(dataset, batch.topic, batch.partition), entry.to_json(), self.fsync)
        self._apply_moves(entry.moves)
        self._ledgers[(dataset, batch.topic, batch.partition)] = entry
        return len(pending.records)

    def _ledger(self, dataset: str, topic: str, partition: int) -> LedgerEntry:
        key = (dataset, topic, partition)
        entry = self._ledgers.get(key)
        if entry is None:
            with self._lock:
                entry = self._ledgers.get(key) or self._recover(dataset, topic, partition)
                self._ledgers[key] = entry
        return entry

    def _recover(self, dataset: str, topic: str, partition: int) -> LedgerEntry:
        """Finish the last committed batch's moves and drop uncommitted staged files."""
        path = self._ledger_path(dataset, topic, partition)
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = LedgerEntry.from_json(path.read_bytes()) if path.exists() else LedgerEntry()
        self._apply_moves(entry.moves)
        staging = self._staging_dir(dataset, topic, partition)
        if staging.exists():
            for leftover in staging.iterdir():
                logger.info("lake: dropping uncommitted staged file %s", leftover)
                leftover.unlink()
        if entry.landed_through >= 0:
            logger.info("lake: %s %s[%d] holds offsets through %d", dataset, topic, partition, entry.landed_through)
        return entry

    def _apply_moves(self, moves: tuple[tuple[str, str], ...]) -> None:
        # No directory fsync here: a rename lost to a power failure leaves the staged file in
        # place, and recovery replays the moves the (durable) ledger lists.
        for staged, final in moves:
            source, target = self.root / staged, self.root / final
            if source.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(source, target)

    def _ledger_path(self, dataset: str, topic: str, partition: int) -> Path:
        return ledger_path(self.root, dataset, topic, partition)

    def _staging_dir(self, dataset: str, topic: str, partition: int) -> Path:
        return self.root / CONTROL_DIR / "staging" / dataset / topic / str(partition)
