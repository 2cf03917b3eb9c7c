"""The lake sink: batches become Snappy Parquet files in hive day partitions, exactly once.

Layout (readers glob ``<root>/streams/<stream>/**/*.parquet`` with hive partitioning)::

    <root>/streams/<stream>/year=YYYY/month=MM/day=DD/<topic>+<partition>+<start offset>.parquet
    <root>/_txlake/ledger/streams/<stream>/<topic>/<partition>.json     offset ledger
    <root>/_txlake/staging/streams/<stream>/<topic>/<partition>/        files not yet committed

The root is a local directory or ``s3://bucket/prefix`` (``lake.root``); the storage
differences live in :mod:`app.lake.storage`, the protocol below is the same for both.

The day is the record's own ``event_timestamp`` in UTC, never the wall clock, so
a late event lands in its day. A batch that spans several days gives one file
per day; the file name is Kafka Connect's ``topic+partition+startOffset``.

Commit protocol for one batch of one (dataset, topic, partition):

1. write each day's rows to a staged file (``.parquet.tmp`` under ``_txlake``:
   no reader's glob or dataset listing sees it) and fsync it;
2. write the ledger -- ``landed_through`` = the batch's last offset, plus the
   list of staged → final moves -- atomically over the old ledger (local: temp
   file, fsync, rename; S3: one PUT of the ledger object). **This is the commit point**;
3. move each staged file to its final name (local: an atomic rename; S3: see below).

The fsyncs (data files, ledger, ledger directory) make a landed batch survive a power
loss too; ``lake.fsync = false`` drops them (a process crash never loses page-cache
writes, so exactly-once holds either way). On S3 an acknowledged upload is durable
and ``lake.fsync`` is ignored.

A crash before 2 leaves only staged files, which a later recovery deletes once they are
older than ``staging_grace_s`` (never younger ones: during a rebalance the previous owner
of a partition may still be between steps 1 and 2, and deleting its staged files would
leave its committed ledger pointing at nothing); the batch is replayed from Kafka. Staged
names carry a random token, so two writers of one partition never share a staged file. A crash after 2 is rolled forward at the next
start: the moves recorded in the ledger are finished before anything else
happens. Replayed records at or below ``landed_through`` are skipped. So every
record is in exactly one visible file, and a file is never visible half-written.

Visibility on S3. S3 has no rename, so step 3 is a server-side copy to the final key
followed by a delete of the staged object. A data object becomes visible to readers
when its copy completes -- whole, never partial (a copy, like a PUT, is atomic) -- and
only after the ledger PUT committed the batch; staged objects live under
``<root>/_txlake/staging/`` and never appear under a dataset prefix. A crash between the
ledger PUT and the last copy leaves part of the batch's days visible until the next start
rolls the moves forward; a crash between a copy and its delete leaves a staged object the
roll-forward copies again (same bytes, idempotent) and deletes. Listing is strongly
consistent on S3 (read-after-write and list-after-write since December 2020), so a reader
listing ``streams/<stream>/`` right after a move sees the object, and recovery listing
the staging prefix sees every staged object.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import uuid
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from app.core.errors import LakeSinkError
from app.core.feeds import Feed
from app.core.settings import LakeSettings
from app.core.sink import Batch, Sink
from app.lake.day_lock import move_into_day
from app.lake.ledger import LakeLedger, LedgerEntry, ledger_key, staging_key
from app.lake.storage import LakeStorage, LocalStorage, is_s3_uri, open_lake_storage

__all__ = ["DATA_FILE_NAME", "DayPartition", "LakeSink", "split_by_day"]

logger = logging.getLogger(__name__)

#: The name of a file the sink (or a stream export) writes: ``<topic>+<partition>+<first offset>.parquet``.
DATA_FILE_NAME = re.compile(r"^(?P<topic>.+)\+(?P<partition>\d+)\+(?P<start>\d+)\.parquet$")


@dataclass(frozen=True, slots=True, order=True)
class DayPartition:
    """A hive day partition of a dataset: ``year=YYYY/month=MM/day=DD``."""

    year: int
    month: int
    day: int

    @property
    def path(self) -> str:
        return f"year={self.year:04d}/month={self.month:02d}/day={self.day:02d}"

    @property
    def date(self) -> date:
        return date(self.year, self.month, self.day)

    @classmethod
    def of(cls, value: date) -> DayPartition:
        return cls(value.year, value.month, value.day)

    @classmethod
    def parse(cls, text: str) -> DayPartition:
        """``2026-11-25`` or ``year=2026/month=11/day=25``; ValueError otherwise."""
        if text.startswith("year="):
            parts = dict(part.split("=", 1) for part in text.strip("/").split("/"))
            return cls(int(parts["year"]), int(parts["month"]), int(parts["day"]))
        return cls.of(date.fromisoformat(text))

    def __str__(self) -> str:
        return self.date.isoformat()


def split_by_day(table: pa.Table) -> list[tuple[DayPartition, pa.Table]]:
    """Split rows by the UTC calendar day of ``event_timestamp`` (offset order kept)."""
    days = pc.cast(table.column("event_timestamp"), pa.date32())
    unique = pc.unique(days)
    if len(unique) == 1:
        slices = [(unique[0].as_py(), table)]
    else:
        slices = [(day.as_py(), table.filter(pc.equal(days, day))) for day in unique]
    return [(DayPartition(day.year, day.month, day.day), rows) for day, rows in sorted(slices)]


class LakeSink(Sink):
    """Lands batches as Parquet files under a lake root (see the module docstring for the protocol).

    ``root`` is a local directory, an ``s3://bucket/prefix`` URI (default S3 options), or a
    :class:`~app.lake.storage.LakeStorage`; :meth:`from_settings` builds the sink from
    ``lake.*`` settings, S3 endpoint and credentials included.

    Thread-safety: writes for different (dataset, topic, partition) may run
    concurrently; writes for the same one must not (each agent lands its
    partitions one batch at a time).
    """

    name = "lake"

    def __init__(
        self,
        root: LakeStorage | Path | str,
        compression: str = "snappy",
        fsync: bool = True,
        staging_grace_s: float = 600.0,
    ) -> None:
        if isinstance(root, LakeStorage):
            self.storage = root
        elif is_s3_uri(root):
            self.storage = open_lake_storage(LakeSettings(root=root, fsync=fsync))
        else:
            self.storage = LocalStorage(root, fsync)
        self.root = self.storage.root if isinstance(self.storage, LocalStorage) else self.storage.uri
        self.ledger = LakeLedger(self.storage)
        self.compression = None if compression == "none" else compression
        self.staging_grace_s = staging_grace_s
        self._ledgers: dict[tuple[str, str, int], LedgerEntry] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: LakeSettings) -> LakeSink:
        """The sink of the ``lake`` settings section (root, codec, fsync, S3 options)."""
        return cls(open_lake_storage(settings), settings.compression, settings.fsync, settings.staging_grace_s)

    async def start(self) -> None:
        try:
            await asyncio.to_thread(self.storage.initialize)
        except OSError as exc:
            raise LakeSinkError(f"lake root {self.storage.uri} is not writable: {exc}") from exc

    async def probe(self) -> None:
        """Raise unless a small file can be written and removed under the lake root (readiness)."""
        await asyncio.to_thread(self.storage.probe)

    async def write(self, batch: Batch) -> int:
        try:
            # Arrow conversion needs the GIL: do it here on the loop, briefly. The file and
            # ledger I/O (C++ and syscalls, GIL released) goes to a thread.
            prepared = self._prepare(batch)
            if prepared is None:
                return 0
            return await asyncio.to_thread(self._commit, batch, *prepared)
        except OSError as exc:
            raise LakeSinkError(f"batch {batch.describe()} to {batch.feed.dataset}: {exc}") from exc

    async def position(self, feed: Feed, partition: int) -> int:
        """Re-read the ledger (another worker may have moved it on), finish its moves, drop old staged files."""
        self._ledgers.pop((feed.dataset, feed.topic, partition), None)
        entry = await asyncio.to_thread(self._ledger, feed.dataset, feed.topic, partition)
        return entry.landed_through

    # -- the commit protocol ---------------------------------------------------

    def write_sync(self, batch: Batch) -> int:
        """:meth:`write` without the event loop (tests, tools)."""
        prepared = self._prepare(batch)
        return 0 if prepared is None else self._commit(batch, *prepared)

    def _prepare(self, batch: Batch) -> tuple[LedgerEntry, Batch, list[tuple[DayPartition, pa.Table]]] | None:
        """The records not yet held, as one Arrow table per day; ``None`` if nothing is new."""
        ledger = self._ledger(batch.feed.dataset, batch.topic, batch.partition)
        pending = batch.after(ledger.landed_through)
        if pending.last_offset <= ledger.landed_through:
            return None
        days: list[tuple[DayPartition, pa.Table]] = []
        if pending.records:
            table = batch.feed.record_kind.to_table(
                pending.records, [batch.partition] * len(pending.records), pending.offsets
            )
            days = split_by_day(table)
        return ledger, pending, days

    def _commit(self, batch: Batch, expected: LedgerEntry, pending: Batch, days: list[tuple[DayPartition, pa.Table]]) -> int:
        """Stage the day files, write the ledger (the commit point), move the files into place."""
        dataset, storage = batch.feed.dataset, self.storage
        key = (dataset, batch.topic, batch.partition)
        # Fencing: if another worker advanced this partition since we read the ledger (a
        # rebalance moved it away and back), our view is stale. Adopt the stored ledger and
        # let the caller retry, which drops what the other worker already landed.
        current = self.ledger.entry(*key)
        if current.landed_through != expected.landed_through:
            self._apply_moves(current.moves)  # idempotent: finish that commit if it was interrupted
            self._ledgers[key] = current
            raise LakeSinkError(
                f"{batch.describe()}: ledger moved from {expected.landed_through} to "
                f"{current.landed_through} (another worker owned the partition); retrying"
            )
        staging = staging_key(*key)
        moves: list[tuple[str, str]] = []
        entry = LedgerEntry(pending.last_offset)
        try:
            if days:
                token = uuid.uuid4().hex[:12]
                storage.makedirs(staging)
                for day, rows in days:
                    start = pc.min(rows.column("_kafka_offset")).as_py()
                    name = f"{batch.topic}+{batch.partition}+{start:020d}.parquet"
                    staged = f"{staging}/{token}-{name}.tmp"
                    moves.append((staged, f"{dataset}/{day.path}/{name}"))
                    storage.write_parquet(staged, rows, self.compression)
                storage.sync_directory(staging)  # the staged names survive a power loss too
            entry = LedgerEntry(pending.last_offset, tuple(moves))
            self.ledger.commit(*key, entry)
        except Exception:
            self._discard_uncommitted(key, entry, moves)
            raise
        self._apply_moves(entry.moves)
        self._ledgers[key] = entry
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
        self.storage.makedirs(ledger_key(dataset, topic, partition).rpartition("/")[0])
        entry = self.ledger.entry(dataset, topic, partition)
        self._apply_moves(entry.moves)
        for leftover in self.storage.list_files(staging_key(dataset, topic, partition)):
            if self.storage.age_s(leftover) >= self.staging_grace_s:
                logger.info("lake: dropping uncommitted staged file %s", leftover)
                self.storage.delete(leftover)
        if entry.landed_through >= 0:
            logger.info("lake: %s %s[%d] holds offsets through %d", dataset, topic, partition, entry.landed_through)
        return entry

    def _discard_uncommitted(self, key: tuple[str, str, int], entry: LedgerEntry, moves: list[tuple[str, str]]) -> None:
        """After a failed attempt (disk full, I/O error): delete its staged files unless it committed.

        The ledger is read back first: a failure after the ledger's rename (a directory fsync)
        means the batch *is* committed and its staged files are what the roll-forward moves.
        When even that read fails, the files stay; a later recovery removes them once old.
        """
        try:
            if self.ledger.entry(*key) == entry:
                return
            for staged, _final in moves:
                self.storage.delete(staged)
        except OSError as exc:
            logger.warning("lake: could not clean up after a failed write: %s", exc)

    def _apply_moves(self, moves: tuple[tuple[str, str], ...]) -> None:
        # Each move is idempotent (a missing source means it was done): recovery replays them all.
        for staged, final in moves:
            if not move_into_day(self.storage, staged, final) and not self.storage.exists(final):
                # Committed and moved before; since then compaction merged it into a bigger file.
                logger.debug("lake: %s was moved earlier and is no longer there (compacted since)", final)
