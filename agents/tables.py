"""The table agent: folds delta messages into the four tables and writes their ksqlDB changelogs.

Used when txlake derives the tables itself (``tables.derive``, the default). Self-contained: one
consumer of the deltas topic (group ``<group_id>-tables``), one producer, and the state of the
deltas partitions it owns; it runs in any process that registers it (:func:`register_table_agent`).

**State** (:mod:`app.tables.store`): per deltas partition *p*, each state table's keys, backed by
partition *p* of its compacted changelog topic (co-partitioned: the consumer that owns deltas
partition *p* owns state partition *p*), in Faust's changelog format. Every record the agent
writes carries the header ``txlake.derived`` (:data:`models.tables.DERIVED_HEADER`): the landing
holds its partition rather than dead-letter such a record.

**Window and flush** (:mod:`app.tables.cache`, :mod:`app.tables.flush`): delta messages are folded
into a per-key cache that reads through to the stored state. A window is flushed when it has
waited ``tables.commit_interval_ms`` (Kafka Streams' ``commit.interval.ms``), when it touched
``tables.cache_max_keys`` keys (the record cache's bound), or as soon as the agent has caught up
with the deltas topic (so a quiet stream is not delayed by the interval). A flush writes each
touched key once, in three ordered steps:

1. each changed key's state into the stored state and, with every touched key's ksqlDB-format
   value, into record batches per topic partition; wait until the broker acknowledged all of them;
2. then the progress record of each flushed partition (``deltas_progress``: the last deltas offset
   the flush covers); wait for its acknowledgement;
3. then ack: commit the covered deltas offsets to the consumer group.

A crash before step 2 completes leaves the progress where it was: the next owner restores the
state (which may already hold some of the flush's keys) and folds the deltas again from the old
progress; every key's per-source watermarks (:mod:`models.aggregates`) skip what its state already
absorbed, and every touched key's value is sent again. So no effect is lost or doubled.

**Where to read from is the state's own position**, never the group's committed offset: on
assignment the agent restores (or keeps, if no other process wrote since) the partition's state
and seeks to its progress + 1. Completeness does not rest on the consumer either: every message's
offset is checked against the next one expected, and a range the consumer skipped is read back
with a plain consumer and folded before the message that revealed it; a partition that stays
behind its end without returning anything for ``STALL_S`` is read back the same way.

**Rebalances**: a revoked partition is flushed before it is given up (the next owner restores from
changelogs that hold everything this process folded), and kept as standby: if it comes back and
its changelogs did not move meanwhile, it is reused without a restore. A flush that cannot
complete within half the session timeout makes the process exit rather than write after the next
owner restored.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import suppress
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.protocol.group import JoinGroupRequest
from aiokafka.structs import OffsetAndMetadata

from app.core import metrics
from app.core.crash_points import crash_point
from app.core.retry import Backoff
from app.core.security import kafka_client_options
from app.core.settings import Settings
from app.runtime.fetcher import leave_group_on_stop
from app.tables.cache import PartitionCache
from app.tables.flush import BatchWriter, plan
from app.tables.state import PROGRESS_TABLE
from app.tables.store import StoredState, changelog_key, changelog_topics, progress_value, restore

__all__ = ["TableAgent", "register_table_agent"]

logger = logging.getLogger(__name__)

EXIT_UNEXPECTED = 70

POLL_MS = 100
"""Longest wait for deltas in one poll (also the granularity of the time bound)."""
MAX_RECORDS = 16
"""Delta messages per poll at most. Each carries the keys of up to a whole source batch (up to 2,000):
folding them does not yield to the event loop, so a poll is kept to a fraction of a second of work
(the heartbeats, and in a whole worker the stream landing, share the loop)."""
MAX_BATCH_BYTES = 512 * 1024
"""Record batch size of the agent's producer: a flush's records per topic partition in few batches."""
FREEZE_TICK_S = 1.0
"""Period of the freeze watchdog's tick."""
STALL_S = 10.0
"""How long an owned partition may stay behind its end with nothing fetched before it is read back."""


class TableAgent(ConsumerRebalanceListener):
    """Derives the four tables from the deltas topic partitions assigned to this process."""

    def __init__(self, settings: Settings, output_topics: Mapping[str, str]) -> None:
        """``output_topics`` maps each table to the topic its ksqlDB-format values go to."""
        self.settings = settings
        self.deltas_topic = settings.table_deltas_topic
        self.client_options = kafka_client_options(settings.kafka)
        self.changelogs = changelog_topics(settings.faust_app_id)
        self.output_topics = dict(output_topics)
        self.commit_interval_s = settings.tables.commit_interval_ms / 1000
        self.cache_max_keys = settings.tables.cache_max_keys
        self.active: dict[int, PartitionCache] = {}
        self.standby: dict[int, StoredState] = {}
        self.restoring: set[int] = set()
        self.consumer: AIOKafkaConsumer | None = None
        self._writer: BatchWriter | None = None
        self._outputs: dict[str, tuple[str, int]] = {}
        self._deltas_partitions = 0
        self._epoch = 0  # bumped by every rebalance callback
        self._flush_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._finished = asyncio.Event()
        self._running = False  # run() began: stop() must wait for its last flush
        self._fetched_at: dict[int, float] = {}
        self._stall_checked = time.monotonic()
        self._to_commit: dict[TopicPartition, int] = {}
        self._committing: asyncio.Task | None = None
        self._backoff = Backoff(settings.errors.retry_backoff_ms / 1000, settings.errors.retry_backoff_max_ms / 1000)
        self._ticked = time.monotonic()  # the freeze watchdog's last tick

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Derive until :meth:`stop`; then flush what is folded and commit. Returns at once if
        :meth:`stop` came first (a worker stopped during its start-up)."""
        if self._stopping.is_set():
            self._finished.set()
            return
        self._running = True
        clients = await self._connect()
        if clients is None:  # stopped while the broker could not be reached
            self._finished.set()
            return
        producer, consumer = clients
        stopped_cleanly = False
        try:
            self._ticked = time.monotonic()
            watchdog = asyncio.create_task(self._watch_for_freezes())
            try:
                await self._derive()
            finally:
                watchdog.cancel()
            async with self._flush_lock:
                await self._flush_owned([c for c in self.active.values() if c.unflushed], "stopping")
            if self._committing is not None:
                await self._committing
            stopped_cleanly = True
        finally:
            if not stopped_cleanly:
                logger.warning("table agent stopped before its last flush; the next owner folds the rest again")
            leave_group_on_stop(consumer)  # a graceful stop hands the partitions over at once
            await consumer.stop()
            await producer.stop()
            self._finished.set()

    async def _connect(self) -> tuple[AIOKafkaProducer, AIOKafkaConsumer] | None:
        """The agent's producer and its consumer, started and subscribed to the deltas topic.

        Retried with backoff while the broker cannot be reached (a worker that starts while Kafka
        restarts waits for it, as every other client of the worker does); None if :meth:`stop`
        came first. Nothing is folded yet, so a failed attempt leaves nothing behind.
        """
        kafka = self.settings.kafka
        attempt = 0
        while not self._stopping.is_set():
            producer = AIOKafkaProducer(
                **self.client_options, acks="all", enable_idempotence=True, linger_ms=0, max_batch_size=MAX_BATCH_BYTES
            )
            consumer = AIOKafkaConsumer(
                **self.client_options,
                group_id=self.settings.table_group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_committed",
                session_timeout_ms=kafka.session_timeout_ms,
                heartbeat_interval_ms=kafka.heartbeat_interval_ms,
                group_instance_id=kafka.group_instance_id,  # static member: a restart takes its partitions back
            )
            try:
                await producer.start()
                self._deltas_partitions = len(await producer.partitions_for(self.deltas_topic))
                self._outputs = {
                    table: (topic, len(await producer.partitions_for(topic))) for table, topic in self.output_topics.items()
                }
                consumer.subscribe([self.deltas_topic], listener=self)
                self.consumer = consumer  # the rebalance callbacks use it, also during the start
                await consumer.start()
            except (KafkaError, OSError) as exc:
                self.consumer = None
                await asyncio.gather(consumer.stop(), producer.stop(), return_exceptions=True)
                delay = self._backoff.delay(attempt)
                attempt += 1
                logger.warning("table agent: cannot start its Kafka clients (%s); retrying in %.1f s", exc, delay)
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                continue
            self._writer = BatchWriter(producer, self._backoff)
            return producer, consumer
        return None

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Ask :meth:`run` to flush and return, and wait for it (bounded).

        If :meth:`run` has not begun (the process is stopped during its start-up, before the app's
        tasks run), nothing was folded and there is nothing to wait for: returns at once, and a
        later :meth:`run` returns without starting.
        """
        self._stopping.set()
        if not self._running:
            return
        try:
            await asyncio.wait_for(self._finished.wait(), timeout_s)
        except TimeoutError:
            logger.warning("table agent did not stop within %.0f s", timeout_s)

    def assignment(self) -> set[int]:
        """The deltas partitions this process derives (restored and folding)."""
        return set(self.active)

    # -- the loop ----------------------------------------------------------------------------

    async def _derive(self) -> None:
        assert self.consumer is not None
        while not self._stopping.is_set():
            if self.restoring:
                await self._restore()
            fetched = await self.consumer.getmany(timeout_ms=POLL_MS, max_records=MAX_RECORDS)
            now = time.monotonic()
            for tp, messages in fetched.items():
                cache = self.active.get(tp.partition)
                if cache is None:
                    continue  # not ours (yet, or any more): its owner reads it from its own position
                self._fetched_at[tp.partition] = now
                for message in messages:
                    if message.offset < cache.position:
                        continue  # folded already (a seek can make the consumer return it again)
                    if message.offset > cache.position:
                        await self._read_back(cache, message.offset, "skipped by the consumer")
                        if self.active.get(tp.partition) is not cache:
                            break  # revoked meanwhile
                    _fold(cache, message.offset, message.value)
            due, reason = self._due(now)
            if due:
                async with self._flush_lock:
                    await self._flush_owned([c for c in due if self.active.get(c.partition) is c], reason)
            await self._check_stalls(now)

    def _due(self, now: float) -> tuple[list[PartitionCache], str]:
        """The windows to flush now (all of them, in one flush) and why, or none."""
        unflushed = [cache for cache in self.active.values() if cache.unflushed]
        if not unflushed:
            return [], ""
        if sum(cache.touched_keys for cache in unflushed) >= self.cache_max_keys:
            return unflushed, "cache_full"
        if now - min(cache.window_started or now for cache in unflushed) >= self.commit_interval_s:
            return unflushed, "interval"
        if self._caught_up():
            return unflushed, "caught_up"
        return [], ""

    def _caught_up(self) -> bool:
        """Whether every owned partition is folded up to the end the consumer last saw."""
        assert self.consumer is not None
        for partition, cache in self.active.items():
            end = self.consumer.highwater(TopicPartition(self.deltas_topic, partition))
            if end is not None and cache.position < end:
                return False
        return True

    # -- flushing ----------------------------------------------------------------------------

    async def _flush_owned(self, caches: list[PartitionCache], reason: str) -> None:
        """Write the windows of ``caches`` (step 1), their progress (step 2), then ack (step 3).

        The caller holds the flush lock. Raises if the broker refused the records for good; then
        nothing of the flush is acked and the process must not go on (the state in memory is
        ahead of the changelogs).
        """
        if not caches:
            return
        assert self._writer is not None
        started = time.monotonic()
        covered = {cache.partition: cache.position - 1 for cache in caches}
        flush = plan(caches, self.changelogs, self._outputs, self._deltas_partitions)
        self._exit_if_frozen()
        ends = await self._writer.write(flush.records)
        crash_point("tables.produced")
        progress_topic = self.changelogs[PROGRESS_TABLE]
        self._exit_if_frozen()
        ends.update(await self._writer.write({
            (progress_topic, partition): [(changelog_key(str(partition)), progress_value(offset))]
            for partition, offset in covered.items()
        }))
        crash_point("tables.progressed")
        by_partition = {cache.partition: cache.stored for cache in caches}
        for partition, stored in by_partition.items():
            stored.applied_through = covered[partition]
            stored.tables[PROGRESS_TABLE][str(partition)] = progress_value(stored.applied_through)
            metrics.TABLE_STATE_KEYS.labels(str(partition)).set(stored.keys)
        changelogs = set(self.changelogs.values())
        for (topic, partition), end in ends.items():
            if topic in changelogs:  # a changelog destination is always its deltas partition
                by_partition[partition].ends[topic] = end
        for table, changed in flush.changed.items():
            metrics.TABLE_UPDATES.labels(table).inc(changed)
        metrics.TABLE_FLUSHES.labels(reason).inc()
        metrics.TABLE_FLUSH_KEYS.observe(flush.touched)
        metrics.TABLE_FLUSH_SECONDS.observe(time.monotonic() - started)
        self._commit_soon({TopicPartition(self.deltas_topic, p): offset + 1 for p, offset in covered.items()})

    async def _watch_for_freezes(self) -> None:
        """Tick every second; :meth:`_exit_if_frozen` compares the time since the last tick."""
        self._ticked = time.monotonic()
        while True:
            await asyncio.sleep(FREEZE_TICK_S)
            self._exit_if_frozen()
            self._ticked = time.monotonic()

    def _exit_if_frozen(self) -> None:
        """Exit if this process did not run for a whole session timeout (SIGSTOP, a paused VM, a
        starved loop): its heartbeats stopped as long, so the group has given its partitions to
        another worker, which restored them; a flush of ours now could land after that restore."""
        stalled = time.monotonic() - self._ticked - FREEZE_TICK_S
        if stalled >= self.settings.kafka.session_timeout_ms / 1000:
            logger.critical("table agent: this process did not run for %.1f s (longer than the session timeout): "
                            "its partitions have moved; exiting without writing", stalled)
            logging.shutdown()
            os._exit(EXIT_UNEXPECTED)

    def _commit_soon(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit ``offsets`` in the background (the group's offsets inform; the state's progress decides)."""
        self._to_commit.update(offsets)
        if self._committing is None or self._committing.done():
            self._committing = asyncio.create_task(self._commit_pending())

    async def _commit_pending(self) -> None:
        while self._to_commit:
            offsets, self._to_commit = self._to_commit, {}
            await self._commit(offsets)

    async def _commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        assert self.consumer is not None
        owned = self.consumer.assignment()
        offsets = {tp: OffsetAndMetadata(offset, "") for tp, offset in offsets.items() if tp in owned}
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except Exception as exc:  # noqa: BLE001 - a rebalance or a broker hiccup: the next flush commits again
            logger.info("table agent: offset commit failed (harmless, the state's progress decides): %s", exc)

    # -- completeness ------------------------------------------------------------------------

    async def _read_back(self, cache: PartitionCache, end: int, why: str) -> None:
        """Fold the partition's deltas from ``cache.position`` up to ``end`` (excluded), read directly."""
        start = cache.position
        metrics.TABLE_DELTA_GAPS.inc()
        logger.warning("table agent: deltas %s[%d] %d..%d %s; reading them", self.deltas_topic, cache.partition,
                       start, end - 1, why)
        async for offset, value in read_range(self.client_options, self.deltas_topic, cache.partition, start, end):
            if offset >= cache.position:
                _fold(cache, offset, value)
        if cache.position < end:
            logger.error("table agent: deltas %s[%d] %d..%d no longer exist (retention); their contributions are lost",
                         self.deltas_topic, cache.partition, cache.position, end - 1)
            cache.position = end

    async def _check_stalls(self, now: float) -> None:
        """Read back owned partitions that stay behind their end while the consumer returns nothing."""
        if now - self._stall_checked < STALL_S / 2 or not self.active:
            return
        self._stall_checked = now
        assert self.consumer is not None
        idle = [p for p in self.active if now - self._fetched_at.get(p, now) >= STALL_S]
        if not idle:
            return
        ends = await self.consumer.end_offsets([TopicPartition(self.deltas_topic, p) for p in idle])
        for tp, end in ends.items():
            cache = self.active.get(tp.partition)
            if cache is not None and cache.position < end:
                await self._read_back(cache, end, f"not returned by the consumer for {STALL_S:.0f} s")
                if self.active.get(tp.partition) is cache:
                    self.consumer.seek(tp, cache.position)
                    self._fetched_at[tp.partition] = time.monotonic()

    # -- rebalances (aiokafka calls these inside the group protocol) ---------------------------

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._epoch += 1
        ours = [tp.partition for tp in revoked if tp.topic == self.deltas_topic]
        self.restoring.difference_update(ours)
        caches = [self.active.pop(p) for p in ours if p in self.active]
        if not caches:
            return
        if self._membership_lost():
            # The group already gave these partitions to someone else (our session expired: the
            # heartbeat was refused); writing the window now would land after their restore. Drop
            # it: the new owner folds those deltas again from the progress. (Kafka's Java client
            # calls this case onPartitionsLost.)
            logger.warning("table agent: membership lost; dropping the unflushed windows of %s", ours)
            async with self._flush_lock:  # a flush already under way finishes first
                for cache in caches:
                    self.standby[cache.partition] = cache.stored  # what the changelogs hold
            return
        try:
            async with asyncio.timeout(self.settings.kafka.session_timeout_ms / 2000):
                async with self._flush_lock:
                    await self._flush_owned([c for c in caches if c.unflushed], "revoked")
        except Exception:
            # Going on could let this flush land after the next owner restored the partition.
            logger.critical("table agent: cannot flush revoked partitions %s, exiting", ours, exc_info=True)
            logging.shutdown()
            os._exit(EXIT_UNEXPECTED)
        await self._commit({TopicPartition(self.deltas_topic, c.partition): c.stored.applied_through + 1 for c in caches})
        for cache in caches:
            self.standby[cache.partition] = cache.stored

    def _membership_lost(self) -> bool:
        """Whether the consumer lost its group membership (aiokafka resets the member id when the
        coordinator refuses a heartbeat as an unknown member or an old generation)."""
        coordinator = getattr(self.consumer, "_coordinator", None)  # aiokafka keeps it private
        return coordinator is not None and coordinator.member_id == JoinGroupRequest.UNKNOWN_MEMBER_ID

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # Nothing slow here (aiokafka does not heartbeat during this callback): the loop restores.
        assert self.consumer is not None
        self._epoch += 1
        ours = {tp.partition for tp in assigned if tp.topic == self.deltas_topic}
        for partition in [p for p in self.standby if p not in ours]:
            del self.standby[partition]
            with suppress(KeyError):
                metrics.TABLE_STATE_KEYS.remove(str(partition))
        fresh = ours - set(self.active)
        self.restoring |= fresh
        if fresh:
            self.consumer.pause(*[TopicPartition(self.deltas_topic, p) for p in fresh])
        logger.info("table agent: assigned deltas partitions %s", sorted(ours))

    async def _restore(self) -> None:
        """Restore (or reuse) the state of the partitions assigned since the last poll, then fold them."""
        assert self.consumer is not None
        epoch, wanted = self._epoch, sorted(self.restoring)
        states = await asyncio.gather(*(self._state_of(p) for p in wanted))
        if epoch != self._epoch:  # a rebalance meanwhile: its assignment decides again
            self.standby.update(zip(wanted, states, strict=True))
            return
        now = time.monotonic()
        for partition, stored in zip(wanted, states, strict=True):
            self.restoring.discard(partition)
            cache = self.active[partition] = PartitionCache(stored)
            self._fetched_at[partition] = now
            tp = TopicPartition(self.deltas_topic, partition)
            self.consumer.seek(tp, cache.position)
            self.consumer.resume(tp)
            metrics.TABLE_STATE_KEYS.labels(str(partition)).set(stored.keys)

    async def _state_of(self, partition: int) -> StoredState:
        """The standby state of ``partition`` if its changelogs did not move since, else a restored one."""
        assert self.consumer is not None
        standby = self.standby.pop(partition, None)
        if standby is not None:
            tps = [TopicPartition(topic, partition) for topic in self.changelogs.values()]
            ends = await self.consumer.end_offsets(tps)
            if all(ends[tp] == standby.ends.get(tp.topic, 0) for tp in tps):
                logger.info("table agent: partition %d kept (its changelogs did not move)", partition)
                return standby
        return await restore(self.client_options, self.changelogs, partition)


def _fold(cache: PartitionCache, offset: int, value: bytes) -> None:
    try:
        cache.fold(offset, value)
    except Exception:
        # Deltas are written by txlake: failing on one is a bug. Never skip it: stop the
        # process; the restart folds it again from the state's progress.
        logger.critical("table agent: cannot fold the delta message at %d of partition %d, exiting",
                        offset, cache.partition, exc_info=True)
        logging.shutdown()
        os._exit(EXIT_UNEXPECTED)


def register_table_agent(app: faust.App, settings: Settings, output_topics: Mapping[str, str]) -> TableAgent:
    """Run a :class:`TableAgent` as a task of ``app``, stopped (flushed) before the app shuts down.

    ``output_topics`` maps table -> the topic its ksqlDB-format changelog goes to.
    """
    agent = TableAgent(settings, output_topics)

    @app.task
    async def _derive_tables() -> None:
        try:
            await agent.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.critical("table agent failed, exiting", exc_info=True)
            logging.shutdown()
            os._exit(EXIT_UNEXPECTED)

    @app.on_before_shutdown.connect
    async def _stop_tables(_app: faust.App, **_: Any) -> None:
        await agent.stop()

    return agent


async def read_range(
    client_options: Mapping[str, Any], topic: str, partition: int, start: int, end: int
) -> AsyncIterator[tuple[int, bytes]]:
    """``(offset, value)`` of ``topic[partition]`` from ``start`` (or the earliest retained) up to ``end`` (excluded)."""
    consumer = AIOKafkaConsumer(
        **client_options, enable_auto_commit=False, auto_offset_reset="earliest", isolation_level="read_committed"
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, start)
        while await consumer.position(tp) < end:
            for record in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                if record.offset >= end:
                    return
                yield record.offset, record.value
    finally:
        await consumer.stop()
