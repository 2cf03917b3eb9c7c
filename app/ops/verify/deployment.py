"""``txlake verify`` over a deployment: prove that every record landed exactly once, or sits in the dead-letter topic.

For every feed and every partition of its topic, :func:`verify_deployment` reconciles

* Kafka: the log start and last offset, and the consumer group's committed position;
* the lake: the visible rows' ``(_kafka_partition, _kafka_offset)`` (read column-wise with
  pyarrow) and the lake's ledger under ``_txlake/ledger/``;
* the warehouse: ``txlake_offset_ledger`` and, for feeds with warehouse tables, that every
  dimension key landed in the lake (at or below the warehouse ledger) has its row;
* the dead-letter topic: the ``__connect.errors.topic/partition/offset`` headers.

The rules are in :mod:`app.ops.verify.reconcile`. Dead letters are at least once (a crash between
publishing and landing republishes them): repeats are counted, never a failure.

Feeds are reconciled by the kind of their dataset: ``streams/…`` here, ``tables/…`` (changelog
positions, the fact table's live rows against the state the changelog implies) in
:mod:`app.ops.verify.tables`. A kind without a reconciler in :data:`RECONCILERS` is listed as
*not checked* (not a failure) so the report never claims more than it proved.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from aiokafka import TopicPartition

from app.core.feeds import Feed
from app.core.settings import Settings
from app.lake.ledger import read_landed_through
from app.lake.storage import LakeStorage, open_lake_storage
from app.ops.verify import sources
from app.ops.verify.reconcile import PartitionFindings, PartitionPositions, reconcile_partition
from app.ops.verify.tables import ChangelogFindings, LiveStateFindings, reconcile_table
from models.dimensions import DIMENSIONS

__all__ = ["RECONCILERS", "FeedReport", "VerifyReport", "verify_deployment"]


@dataclass
class FeedReport:
    """One feed: its partitions' findings (and a table feed's live state), or why it was not checked."""

    feed: str
    topic: str
    dataset: str
    partitions: list[PartitionFindings | ChangelogFindings] = field(default_factory=list)
    not_checked: str | None = None
    live_state: LiveStateFindings | None = None

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.partitions) and (self.live_state is None or self.live_state.ok)

    def to_json(self) -> dict:
        return {
            "feed": self.feed,
            "topic": self.topic,
            "dataset": self.dataset,
            "ok": self.ok,
            "not_checked": self.not_checked,
            "partitions": [p.to_json() for p in self.partitions],
            **({"live_state": self.live_state.to_json()} if self.live_state is not None else {}),
        }


@dataclass
class VerifyReport:
    """The whole deployment: every feed, plus dead letters whose headers name no known source."""

    feeds: list[FeedReport]
    foreign_dead_letters: int
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return all(feed.ok for feed in self.feeds)

    @property
    def records_checked(self) -> int:
        return sum(p.checked for feed in self.feeds for p in feed.partitions)

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "records_checked": self.records_checked,
            "foreign_dead_letters": self.foreign_dead_letters,
            "elapsed_s": round(self.elapsed_s, 3),
            "feeds": [feed.to_json() for feed in self.feeds],
        }


@dataclass(frozen=True)
class _Context:
    settings: Settings
    storage: LakeStorage
    kafka: sources.KafkaPositions
    dead_letters: sources.DeadLetterIndex
    warehouse_ledgers: dict[tuple[str, str, int], int]
    settled: bool


async def _reconcile_stream_feed(context: _Context, feed: Feed) -> FeedReport:
    """A stream feed: every offset of every partition, contiguous from the log start."""
    report = FeedReport(feed.name, feed.topic, feed.dataset)
    partitions = context.kafka.partitions(feed.topic)
    # Ledgers first, rows second: a batch committed in between only adds rows above the
    # ledgers read, which the reconciliation ignores (never reported as beyond the ledger).
    lake_through = {
        p: await asyncio.to_thread(read_landed_through, context.storage, feed.dataset, feed.topic, p) for p in partitions
    }
    table = await asyncio.to_thread(sources.lake_columns, context.storage, feed.dataset, sources.feed_lake_columns(feed))
    by_partition = sources.offsets_by_partition(table)
    warehouse_through: dict[int, int] = {}
    for p in partitions:
        tp = TopicPartition(feed.topic, p)
        held = None
        if feed.warehouse:
            held = warehouse_through[p] = context.warehouse_ledgers.get((feed.name, feed.topic, p), -1)
        positions = PartitionPositions(
            log_start=context.kafka.log_start[tp],
            last_offset=context.kafka.last_offset[tp],
            committed=context.kafka.committed.get(tp),
            lake_through=lake_through[p],
            warehouse_through=held,
        )
        dead = np.asarray(context.dead_letters.get((feed.topic, p), ()), dtype=np.int64)
        lake = by_partition.get(p, np.zeros(0, dtype=np.int64))
        report.partitions.append(reconcile_partition(feed.name, feed.topic, p, positions, lake, dead))
    if feed.warehouse and table is not None:
        await _check_dimensions(context, feed, table, warehouse_through, report)
    return report


async def _check_dimensions(
    context: _Context, feed: Feed, table: pa.Table, warehouse_through: dict[int, int], report: FeedReport
) -> None:
    """Every dimension key on a lake row at or below its partition's warehouse ledger has its row."""
    for name in feed.warehouse:
        dimension = DIMENSIONS[name]
        landed = sources.keys_through(table, warehouse_through, dimension.key_column)
        stored = await sources.dimension_keys(context.settings, dimension.table, dimension.key_column)
        absent = sorted(landed - stored)
        # Reported on the first partition: a key belongs to no single partition, one place is enough.
        report.partitions[0].missing_dimension_keys[name] = absent[:20] + (
            [f"... and {len(absent) - 20} more"] if len(absent) > 20 else []
        )


async def _reconcile_table_feed(context: _Context, feed: Feed) -> FeedReport:
    """A table feed: its changelog's positions and its fact table's live rows (:mod:`app.ops.verify.tables`)."""
    report = FeedReport(feed.name, feed.topic, feed.dataset)
    findings, report.live_state = await reconcile_table(
        context.settings, feed, context.kafka.partitions(feed.topic), context.kafka, context.dead_letters,
        settled=context.settled,
    )
    report.partitions.extend(findings)
    return report


Reconciler = Callable[[_Context, Feed], Awaitable[FeedReport]]
RECONCILERS: dict[str, Reconciler] = {"streams": _reconcile_stream_feed, "tables": _reconcile_table_feed}
"""Dataset kind (the first part of ``feed.dataset``) -> its reconciler."""


async def verify_deployment(settings: Settings, feeds: tuple[Feed, ...], *, settled: bool = False) -> VerifyReport:
    """Reconcile every feed (see the module docstring). Read-only; safe while workers run.

    ``settled``: the caller knows nothing is in flight, so a table feed's changelog must have
    landed up to Kafka's last offset (otherwise offsets above its ledger are lag, not a problem).
    """
    started = time.monotonic()
    storage = open_lake_storage(settings.lake)
    kafka = await sources.kafka_positions(settings, [feed.topic for feed in feeds] + [settings.dead_letter_topic])
    dead_letters = await sources.read_dead_letters(settings, kafka)
    ledgers = await sources.warehouse_ledgers(settings) if any(feed.warehouse for feed in feeds) else {}
    context = _Context(settings, storage, kafka, dead_letters, ledgers, settled)
    reports = []
    for feed in feeds:
        kind = feed.dataset.split("/", 1)[0]
        reconciler = RECONCILERS.get(kind)
        if reconciler is None:
            reports.append(FeedReport(feed.name, feed.topic, feed.dataset, not_checked=f"no reconciler for {kind} feeds yet"))
            continue
        if not kafka.partitions(feed.topic):
            reports.append(FeedReport(feed.name, feed.topic, feed.dataset, not_checked=f"topic {feed.topic} does not exist"))
            continue
        reports.append(await reconciler(context, feed))
    known = {feed.topic for feed in feeds}
    foreign = sum(len(offsets) for (topic, _), offsets in dead_letters.items() if topic not in known)
    return VerifyReport(reports, foreign, time.monotonic() - started)
