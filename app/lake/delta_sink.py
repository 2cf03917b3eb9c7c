"""The Delta lake sink (``lake.format = "delta"``): batches become Delta commits, exactly once.

Each stream dataset is a Delta table (see :mod:`app.lake.delta` for the layout). A commit adds
the batch's rows, split into ``year=/month=/day=`` files by delta-rs, **and** one application
transaction per Kafka partition it covers (``txlake-<topic>-<partition>`` → the batch's last
offset). The Delta log is the sink's ledger: the position of a partition is the ``txn`` version
of its app id in the latest table version, read back on assignment. There is no ledger file
beside the table and nothing to recover after a crash.

Group commit. Partitions land in their own lanes (the agent lands one batch per partition at a
time, all partitions of a feed at once), but commits to one table are serial. Every table has a
committer: :meth:`DeltaLakeSink.write` queues the batch and waits; the committer takes *every*
batch queued at that moment -- one per partition -- and lands them in a single commit, then the
next group. It never waits for a partition that has not queued (no linger): a batch waits at most
for the commit in flight. The lanes of one fetched batch queue during the same turn of the event
loop, so a flush of four partitions is one commit (``txlake_delta_commit_batches`` shows it).

Exactly once:

1. delta-rs writes the data files (invisible: nothing in the log names them), then commits the
   log entry with the rows *and* the ``txn`` actions: a new ``_delta_log/<version>.json`` created
   only if absent (local: an atomic create-if-absent; S3: a conditional PUT). **The commit point.**
2. Before a commit, each batch is filtered against its partition's ``txn`` version in the table
   version the committer holds: records at or below are dropped (a replay lands nothing twice).
3. A concurrent commit that moved one of the same app ids -- another worker that took the partition
   during a rebalance -- makes delta-rs refuse ours (``ConcurrentTransaction``); the committer
   loads the newer log, filters again, and commits what is still new. Concurrent commits of *other*
   partitions (another worker's) are appends: delta-rs rebases onto them and retries by itself.

A crash before 1 completes leaves data files no log entry names: Delta readers never see them,
the batch is replayed from Kafka, and ``vacuum`` deletes them once older than
``lake.delta_vacuum_retention_hours``. A crash after 1 is a landed batch: its offsets are in the log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from app.core import metrics
from app.core.errors import LakeSinkError
from app.core.feeds import Feed
from app.core.settings import LakeSettings
from app.core.sink import Batch, Sink
from app.lake.delta import (
    PARTITION_COLUMNS,
    DeltaLedger,
    app_id,
    open_table,
    read_position,
    storage_options,
    table_configuration,
    table_uri,
    with_day_columns,
)
from app.lake.storage import LakeStorage, open_lake_storage

__all__ = ["DeltaLakeSink"]

logger = logging.getLogger(__name__)

WRITER = f"{socket.gethostname()}:{os.getpid()}"  # in each commit's commitInfo: which worker committed it
CONFLICT_ATTEMPTS = 8  # app-id conflicts in a row before the batches are handed back as a failure


@dataclass(eq=False)
class _Pending:
    """One partition batch waiting for its table's next commit."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int
    rows: pa.Table  # may be empty (every record dead-lettered): then only the position moves
    done: asyncio.Future[int] = field(repr=False)

    @property
    def app_id(self) -> str:
        return app_id(self.topic, self.partition)


class _TableCommitter:
    """The serial committer of one Delta table (see "Group commit" in the module docstring)."""

    def __init__(self, sink: DeltaLakeSink, dataset: str) -> None:
        self.sink = sink
        self.dataset = dataset
        self.uri = table_uri(sink.settings, dataset)
        self.table = None  # deltalake.DeltaTable, used by the commit thread only
        self.queue: list[_Pending] = []
        self.draining: asyncio.Task[None] | None = None

    def submit(self, pending: _Pending) -> None:
        self.queue.append(pending)
        if self.draining is None or self.draining.done():
            self.draining = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        # One more turn of the loop: a lane whose write is one step behind the others joins.
        await asyncio.sleep(0)
        while self.queue:
            group, rest, seen = [], [], set()
            for pending in self.queue:  # one batch per partition per commit (lanes queue one anyway)
                full = not self.sink.group_commits and bool(group)
                (rest if pending.app_id in seen or full else group).append(pending)
                seen.add(pending.app_id)
            self.queue = rest
            try:
                landed = await asyncio.to_thread(self.commit, group)
            except Exception as exc:  # noqa: BLE001 - handed to every writer of the group
                error = exc if isinstance(exc, LakeSinkError) else LakeSinkError(f"delta commit to {self.dataset}: {exc}")
                if not isinstance(exc, LakeSinkError):
                    error.__cause__ = exc
                self.table = None  # reload the log before the retry: the failure may have been anywhere
                for pending in group:
                    if not pending.done.done():
                        pending.done.set_exception(error)
                continue
            for pending, count in zip(group, landed, strict=True):
                if not pending.done.done():
                    pending.done.set_result(count)

    def commit(self, group: Sequence[_Pending]) -> list[int]:
        """Land ``group`` in one Delta commit (commit thread). Returns the records landed per batch."""
        from deltalake.exceptions import CommitFailedError

        for attempt in range(CONFLICT_ATTEMPTS):
            if self.table is None:
                self.table = open_table(self.sink.settings, self.dataset)
            try:
                return self._commit_once(group)
            except CommitFailedError as exc:
                # Another writer committed one of our app ids (or the metadata) first: load its
                # commits and filter again; what it already landed is skipped.
                metrics.DELTA_COMMIT_CONFLICTS.labels(self.dataset).inc()
                logger.info("lake: %s commit conflict (attempt %d): %s", self.dataset, attempt + 1, exc)
                self.table = None
        raise LakeSinkError(f"delta commit to {self.dataset}: {CONFLICT_ATTEMPTS} conflicts in a row")

    def _commit_once(self, group: Sequence[_Pending]) -> list[int]:
        from deltalake import CommitProperties, Transaction, WriterProperties, write_deltalake

        table, settings = self.table, self.sink.settings
        landed: list[int] = []
        parts: list[pa.Table] = []
        committing: list[_Pending] = []
        for pending in group:
            held = read_position(table, pending.topic, pending.partition)
            self.sink.remember(self.dataset, pending.topic, pending.partition, held)
            if pending.last_offset <= held:
                landed.append(0)
                continue
            rows = pending.rows
            if held >= pending.first_offset:  # part of it is held already
                rows = rows.filter(pc.greater(rows.column("_kafka_offset"), held))
            parts.append(rows)
            landed.append(rows.num_rows)
            committing.append(pending)
        if not committing:
            return landed
        creating = table is None
        write_deltalake(
            self.uri if creating else table,
            parts[0] if len(parts) == 1 else pa.concat_tables(parts, promote_options="default"),
            mode="append",
            partition_by=PARTITION_COLUMNS,
            schema_mode="merge",
            configuration=table_configuration(settings.delta_checkpoint_interval) if creating else None,
            storage_options=(storage_options(settings) or None) if creating else None,
            writer_properties=WriterProperties(compression=self.sink.compression),
            commit_properties=CommitProperties(
                app_transactions=[Transaction(p.app_id, p.last_offset) for p in committing],
                custom_metadata={
                    "txlake.writer": WRITER,
                    "txlake.batches": ",".join(f"{p.topic}[{p.partition}]{p.first_offset}..{p.last_offset}" for p in committing),
                },
            ),
        )
        if creating:
            self.table = open_table(settings, self.dataset)
        for pending in committing:
            self.sink.remember(self.dataset, pending.topic, pending.partition, pending.last_offset)
        metrics.DELTA_COMMITS.labels(self.dataset).inc()
        metrics.DELTA_COMMIT_BATCHES.labels(self.dataset).observe(len(committing))
        return landed


class DeltaLakeSink(Sink):
    """Lands stream batches in Delta tables under the lake root (module docstring: the protocol).

    Thread-safety: writes for different partitions may run concurrently (that is how they are
    grouped); writes for the same (dataset, topic, partition) must not, as for every sink.
    """

    name = "lake"

    def __init__(self, settings: LakeSettings, storage: LakeStorage | None = None, *, group_commits: bool = True) -> None:
        """``group_commits=False``: one commit per partition batch (the benchmark's reference only)."""
        self.settings = settings
        self.group_commits = group_commits
        self.storage = storage or open_lake_storage(settings)
        self.ledger = DeltaLedger(settings)
        self.compression = "UNCOMPRESSED" if settings.compression == "none" else settings.compression.upper()
        self._committers: dict[str, _TableCommitter] = {}
        self._positions: dict[tuple[str, str, int], int] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: LakeSettings) -> DeltaLakeSink:
        return cls(settings)

    async def start(self) -> None:
        try:
            await asyncio.to_thread(self.storage.initialize)
        except OSError as exc:
            raise LakeSinkError(f"lake root {self.storage.uri} is not writable: {exc}") from exc

    async def probe(self) -> None:
        """Raise unless a small file can be written and removed under the lake root (readiness)."""
        await asyncio.to_thread(self.storage.probe)

    async def write(self, batch: Batch) -> int:
        dataset = batch.feed.dataset
        # The cached position only saves converting records known to be held; the committer
        # filters against the log itself. No I/O here: the lanes of a flush reach the committer in
        # the same turn of the loop, which is what makes them one commit.
        held = self._positions.get((dataset, batch.topic, batch.partition), -1)
        pending = batch.after(held)
        if pending.last_offset <= held:
            return 0
        # Arrow conversion needs the GIL: here on the loop, briefly; the commit runs in a thread.
        table = batch.feed.record_kind.to_table(pending.records, [batch.partition] * len(pending.records), pending.offsets)
        rows = with_day_columns(table)
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._committer(dataset).submit(
            _Pending(batch.topic, batch.partition, pending.first_offset, pending.last_offset, rows, done)
        )
        try:
            return await done
        except OSError as exc:
            raise LakeSinkError(f"batch {batch.describe()} to {dataset}: {exc}") from exc

    def write_sync(self, batch: Batch) -> int:
        """:meth:`write` without a running event loop (tools, benchmarks): one commit per batch."""
        return asyncio.run(self.write(batch))

    async def position(self, feed: Feed, partition: int) -> int:
        """The partition's position in the latest table version (the log, not a cache); -1 for none."""
        try:
            held = await self.ledger.read(feed, partition)
        except OSError as exc:
            raise LakeSinkError(f"reading the position of {feed.topic}[{partition}] in {feed.dataset}: {exc}") from exc
        with self._lock:  # the log is the truth: forget what this worker believed before
            self._positions[(feed.dataset, feed.topic, partition)] = held
        return held

    def remember(self, dataset: str, topic: str, partition: int, position: int) -> None:
        """Cache a position read from (or committed to) the log; never moves one backwards."""
        key = (dataset, topic, partition)
        with self._lock:
            self._positions[key] = max(position, self._positions.get(key, -1))

    async def stop(self) -> None:
        """Wait for the commits in flight (a SIGKILL instead is safe too: see the module docstring)."""
        waiting = [c.draining for c in self._committers.values() if c.draining is not None and not c.draining.done()]
        if waiting:
            await asyncio.wait(waiting, timeout=30)

    def _committer(self, dataset: str) -> _TableCommitter:
        committer = self._committers.get(dataset)
        if committer is None:
            committer = self._committers[dataset] = _TableCommitter(self, dataset)
        return committer
