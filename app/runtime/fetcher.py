"""The stream fetcher: reads the feeds' topics in whole batches and hands them to the feed agents.

Faust delivers a topic to an agent one event at a time, through a per-message path
(``wait_first`` per message, stream processors, per-event sensors) that tops out near
11,000 messages/s on two cores -- below what the sinks can take. For the high-volume
stream feeds the fetcher uses aiokafka's ``getmany()`` directly, in the worker's consumer
group, and gives each feed's Faust agent *whole batches* through the agent's in-memory
channel. As in Kafka Connect's S3 sink, ``flush_size`` and ``rotate_interval_ms`` count per
topic partition: a partition's chunk is up to ``flush_size`` consecutive messages, due when
full or when its oldest message has waited ``rotate_interval_ms``; the due chunks of a topic
are handed over together and land concurrently.

Contract with the agents: a :class:`FetchedBatch` carries a future; the agent resolves it
once the batch is in every sink (or dead-lettered). Only then does the fetcher count the
batch's offsets as landed and commit them to Kafka (every ``commit_interval_ms``). A feed
with ``MAX_IN_FLIGHT`` batches or ``MAX_IN_FLIGHT_MESSAGES`` messages not yet landed has its
partitions paused: back-pressure per feed, so one slow feed never stalls the others, and
memory stays bounded whatever ``flush_size`` is.

Membership: with ``kafka.group_instance_id`` set the consumer is a *static* member (KIP-345):
a restarted worker rejoins under the same id and gets its partitions back at once, without a
rebalance and without waiting for the killed process's session to expire. Static members do not
leave the group when they stop (aiokafka, like the Java client, skips the LeaveGroup), so their
partitions would wait a whole session timeout whenever a pod goes away for good -- which is every
graceful stop of a Deployment's pod (a rollout or scale-down names the new pod differently). The
fetcher therefore leaves the group on a graceful stop (:func:`leave_group_on_stop`); a crash
leaves nothing and a restart under the same id resumes where the group left it.

Transactions: the fetcher reads with ``isolation_level=read_committed``: records of aborted
transactions are never handed over, and a partition is read only up to its last stable offset
(an open transaction holds it back until it commits or aborts). The derived streams txlake
writes itself are transactional (:mod:`app.derived.sink`), and so are ksqlDB's topics under its
``exactly_once_v2`` guarantee. Their offsets are not dense: a commit or abort marker takes an
offset no record has. So the offset committed for a partition whose every record has landed is
the consumer's position (past the markers), not the last record's offset plus one.

Rebalances: on revocation the fetcher drops what it buffered for the revoked partitions,
waits (bounded) for their batches in flight to land and commits; on assignment it seeks
every partition to what the sinks hold (the lowest ledger position + 1): the sinks, not
the consumer group, are the truth, so a commit that never happened costs a re-read, never
a duplicate (the sinks skip offsets they hold anyway).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from app.core.feeds import Feed
from app.core.retry import Backoff
from app.core.security import kafka_client_options
from app.core.settings import Settings

__all__ = ["FetchedBatch", "StreamFetcher", "leave_group_on_stop"]

logger = logging.getLogger(__name__)

MAX_IN_FLIGHT = 16  # batches per feed handed to its agent and not yet landed
MAX_IN_FLIGHT_MESSAGES = 16_000  # their messages at most: 16 batches of the default flush size
POLL_TIMEOUT_MS = 20  # short: a landed batch frees a paused feed within a poll


@dataclass(eq=False)
class FetchedBatch:
    """Up to ``flush_size`` consecutive messages of each of some partitions of a feed's topic.

    The messages are aiokafka's records as the consumer returned them (no copy per message).
    """

    feed: Feed
    messages: list[ConsumerRecord]
    landed: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def last_offsets(self) -> dict[int, int]:
        last: dict[int, int] = {}
        for message in self.messages:
            last[message.partition] = message.offset
        return last


Deliver = Callable[[FetchedBatch], Awaitable[None]]
Position = Callable[[Feed, int], Awaitable[int]]


class StreamFetcher(ConsumerRebalanceListener):
    """One aiokafka consumer in the worker's group for every stream feed."""

    def __init__(
        self,
        settings: Settings,
        feeds: Sequence[Feed],
        deliver: Deliver,
        held_through: Position,
        group_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``held_through`` gives a partition's resume position (the sinks'); ``group_id`` is the
        consumer group (per worker role; default ``kafka.group_id``); ``clock`` times the rotate
        interval (monotonic seconds; a test passes its own)."""
        self.settings = settings
        self.group_id = group_id or settings.kafka.group_id  # the consumer group (per worker role)
        self.feeds = {feed.topic: feed for feed in feeds}
        self.deliver = deliver
        self.held_through = held_through
        self.clock = clock
        self.consumer: AIOKafkaConsumer | None = None
        self.rebalancing = False
        self._assigned: set[TopicPartition] = set()
        self._pending: dict[TopicPartition, list[ConsumerRecord]] = defaultdict(list)
        self._pending_since: dict[TopicPartition, float] = {}
        self._in_flight: dict[str, deque[FetchedBatch]] = defaultdict(deque)
        self._position: dict[TopicPartition, int] = {}  # next offset accepted from the consumer
        self._landed: dict[TopicPartition, int] = {}  # next offset to commit
        self._committed: dict[TopicPartition, int] = {}
        self._stopping = asyncio.Event()
        self.records_received_at: float | None = None  # time.monotonic() Kafka last returned records

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Fetch until :meth:`stop`; commits landed offsets on the way out."""
        batching = self.settings.batching
        if not await self._start_consumer():
            return  # stopped while the broker could not be reached
        committer = asyncio.create_task(self._commit_periodically())
        # What exists now (modules, the Faust app, clients, sinks) lives as long as the process:
        # move it out of the collector's reach, so the full collections that record churn
        # triggers do not walk it again and again.
        gc.freeze()
        try:
            await self._fetch(batching.flush_size, batching.rotate_interval_ms / 1000)
        finally:
            committer.cancel()
            try:
                await self._commit()
            except Exception as exc:  # noqa: BLE001 - the next owner re-reads; the sinks skip
                logger.warning("final offset commit failed: %s", exc)
            leave_group_on_stop(self.consumer)
            await self.consumer.stop()

    async def _start_consumer(self) -> bool:
        """Start the consumer, subscribed to the feeds; retried with backoff while the broker cannot
        be reached (a worker starting while Kafka restarts waits for it). False if stopped first."""
        kafka, errors = self.settings.kafka, self.settings.errors
        backoff = Backoff(errors.retry_backoff_ms / 1000, errors.retry_backoff_max_ms / 1000)
        attempt = 0
        while not self._stopping.is_set():
            consumer = AIOKafkaConsumer(
                **kafka_client_options(kafka),
                group_id=self.group_id,
                group_instance_id=kafka.group_instance_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_committed",  # transactional topics: committed records only
                session_timeout_ms=kafka.session_timeout_ms,
                heartbeat_interval_ms=kafka.heartbeat_interval_ms,
                # Bounded prefetch: at most ~1 MiB per partition and 16 MiB per fetch wait in memory.
                max_partition_fetch_bytes=1024 * 1024,
                fetch_max_bytes=16 * 1024 * 1024,
            )
            consumer.subscribe(list(self.feeds), listener=self)
            self.consumer = consumer  # the rebalance callbacks use it, also during the start
            try:
                await consumer.start()
            except (KafkaError, OSError) as exc:
                self.consumer = None
                await asyncio.gather(consumer.stop(), return_exceptions=True)
                delay = backoff.delay(attempt)
                attempt += 1
                logger.warning("stream fetcher: cannot start its consumer (%s); retrying in %.1f s", exc, delay)
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                continue
            return True
        return False

    def stop(self) -> None:
        self._stopping.set()

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    # -- fetching ----------------------------------------------------------------------------

    async def _fetch(self, flush_size: int, rotate_s: float) -> None:
        assert self.consumer is not None
        while not self._stopping.is_set():
            self._apply_backpressure()
            records = await self.consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=flush_size)
            now = self.clock()
            if records:
                self.records_received_at = time.monotonic()  # the health probes' clock
            owned = self.consumer.assignment()
            for tp, fetched in records.items():
                if tp not in owned:
                    continue  # revoked while the fetch was in flight: the next owner reads it
                # Offsets only move forward: a seek during a rebalance can make the consumer
                # return records it already returned; they are pending or landed already.
                position = self._position.get(tp, 0)
                fresh = [r for r in fetched if r.offset >= position]
                if not fresh:
                    continue
                self._position[tp] = fresh[-1].offset + 1
                pending = self._pending[tp]
                if not pending:
                    self._pending_since[tp] = now
                pending.extend(fresh)
            if self.rebalancing:
                continue  # keep what is pending until the new assignment is settled
            # Every partition chunk that is due -- full, or its oldest message waited long
            # enough -- goes to the feed's agent in one hand-over, so the partitions of a
            # topic land concurrently.
            due: dict[str, list[ConsumerRecord]] = defaultdict(list)
            for tp, pending in self._pending.items():
                if len(pending) >= flush_size:
                    due[tp.topic].extend(pending[:flush_size])
                    del pending[:flush_size]
                    self._pending_since[tp] = now
                elif pending and now - self._pending_since[tp] >= rotate_s:
                    due[tp.topic].extend(pending)
                    pending.clear()
            for topic, messages in due.items():
                await self._hand_over(topic, messages)

    async def _hand_over(self, topic: str, messages: list[ConsumerRecord]) -> None:
        batch = FetchedBatch(self.feeds[topic], messages)
        self._in_flight[topic].append(batch)
        batch.landed.add_done_callback(lambda _f, b=batch: self._on_landed(b))
        await self.deliver(batch)

    def _on_landed(self, batch: FetchedBatch) -> None:
        in_flight = self._in_flight[batch.feed.topic]
        if batch in in_flight:
            in_flight.remove(batch)
        if batch.landed.cancelled() or batch.landed.exception() is not None:
            return
        for partition, offset in batch.last_offsets().items():
            tp = TopicPartition(batch.feed.topic, partition)
            self._landed[tp] = max(self._landed.get(tp, 0), offset + 1)

    def in_flight_messages(self, topic: str) -> int:
        """Messages of ``topic``'s batches handed to its agent and not yet landed."""
        return sum(len(batch.messages) for batch in self._in_flight[topic])

    def _apply_backpressure(self) -> None:
        assert self.consumer is not None
        paused = self.consumer.paused()
        for topic, in_flight in self._in_flight.items():
            partitions = [tp for tp in self._assigned if tp.topic == topic]
            if len(in_flight) >= MAX_IN_FLIGHT or self.in_flight_messages(topic) >= MAX_IN_FLIGHT_MESSAGES:
                self.consumer.pause(*[tp for tp in partitions if tp not in paused])
            else:
                self.consumer.resume(*[tp for tp in partitions if tp in paused])

    # -- offsets -----------------------------------------------------------------------------

    async def _commit_periodically(self) -> None:
        interval = self.settings.kafka.commit_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                await self._commit()
            except Exception as exc:  # noqa: BLE001 - retried next interval; the sinks are the truth
                logger.warning("offset commit failed, retrying: %s", exc)

    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        assert self.consumer is not None
        await self._skip_markers()
        offsets = {
            tp: OffsetAndMetadata(offset, "")
            for tp, offset in self._landed.items()
            if tp in self._assigned and (only is None or tp in only) and offset > self._committed.get(tp, -1)
        }
        if offsets:
            await self.consumer.commit(offsets)
            for tp, meta in offsets.items():
                self._committed[tp] = meta.offset

    async def _skip_markers(self) -> None:
        """Count a partition landed through the consumer's position once all it accepted has landed.

        The position is past the transaction markers (and aborted records) that follow the last
        record; without this a transactional partition would show a lag of one forever.
        """
        assert self.consumer is not None
        busy = {(batch.feed.topic, p) for queue in self._in_flight.values() for batch in queue for p in batch.last_offsets()}
        for tp in self._assigned:
            if self._pending.get(tp) or (tp.topic, tp.partition) in busy:
                continue
            accepted = self._position.get(tp)
            if accepted is not None and self._landed.get(tp) != accepted:
                continue  # accepted records are still landing
            try:
                position = await self.consumer.position(tp)
            except Exception:  # noqa: BLE001, S112 - not assigned any more, or no position yet
                continue
            if self._position.get(tp) != accepted or tp not in self._assigned:
                continue  # records arrived meanwhile: next time
            if position > self._landed.get(tp, 0):
                self._position[tp] = position
                self._landed[tp] = position

    # -- rebalances (aiokafka calls these inside the group protocol) ---------------------------

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.rebalancing = True
        revoked = set(revoked)
        for tp in revoked:
            self._pending.pop(tp, None)
        waiting = [b.landed for q in self._in_flight.values() for b in q]
        if waiting:
            # Let what is in flight land (bounded: the group waits for us). A batch still
            # landing afterwards is fenced by the sinks' ledgers.
            await asyncio.wait(waiting, timeout=self.settings.kafka.session_timeout_ms / 2000)
        try:
            await self._commit(only=revoked)
        except Exception as exc:  # noqa: BLE001 - the next owner re-reads; the sinks skip what is held
            logger.warning("commit on revocation failed: %s", exc)
        self._assigned -= revoked
        for tp in revoked:
            self._landed.pop(tp, None)
            self._committed.pop(tp, None)
            self._position.pop(tp, None)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        assert self.consumer is not None
        # Reading the sinks' positions recovers their ledgers, and a lake recovery drops the
        # staged files it does not know: never for a partition with a batch of ours still
        # landing. Such a partition came straight back to us; its records are filtered by
        # position, and the sinks skip whatever another owner landed meanwhile.
        landing = {
            TopicPartition(batch.feed.topic, partition)
            for queue in self._in_flight.values()
            for batch in queue
            for partition in batch.last_offsets()
        }
        # The positions are read concurrently: landing resumes only once every one is known,
        # and a restarted worker gets all its partitions at once.
        wanted = [tp for tp in assigned if tp not in landing]
        positions = await asyncio.gather(*(self._sinks_position(tp) for tp in wanted))
        for tp, held in zip(wanted, positions, strict=True):
            if held is not None and held >= 0:
                self.consumer.seek(tp, held + 1)
                self._landed[tp] = held + 1
                # Records fetched before this seek stay pending (the sinks skip what they
                # hold); never accept an offset twice.
                self._position[tp] = max(self._position.get(tp, 0), held + 1)
        self._assigned |= set(assigned)
        logger.info("assigned %d partitions: %s", len(assigned), sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))
        self.rebalancing = False

    async def _sinks_position(self, tp: TopicPartition) -> int | None:
        """What the sinks hold for ``tp``; ``None`` if unreadable (the committed offset is used)."""
        try:
            return await self.held_through(self.feeds[tp.topic], tp.partition)
        except Exception as exc:  # noqa: BLE001 - fall back to the committed offset
            logger.warning("cannot read the sinks' position of %s[%d], using the committed offset: %s",
                           tp.topic, tp.partition, exc)
            return None


def leave_group_on_stop(consumer: AIOKafkaConsumer) -> None:
    """Make ``consumer.stop()`` leave the group even if the consumer is a static member.

    aiokafka sends its LeaveGroup on stop only for dynamic members (KIP-345: a static member
    stays, expecting to come back under the same ``group.instance.id``). A pod of a Deployment
    that stops gracefully does not come back under its name, so its partitions would wait a
    session timeout; leaving hands them over at once. aiokafka's LeaveGroup (v0/v1) names the
    member id, which Kafka accepts for static members and which removes the instance id too.
    Call it right before ``stop()``; from another thread only while the consumer's own loop is
    not joining the group (Faust's consumer, at shutdown).
    """
    coordinator = getattr(consumer, "_coordinator", None)  # aiokafka has no public switch for this
    if coordinator is not None:
        coordinator._group_instance_id = None  # noqa: SLF001 - see above
