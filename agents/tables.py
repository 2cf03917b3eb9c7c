"""The table agent: folds delta messages into the four tables and writes their ksqlDB changelogs.

Used when txlake derives the tables itself (``tables.derive``, the default). The state lives in
Faust tables -- one per ksqlDB table plus the product buyers -- partitioned like the deltas topic
(co-partitioned: the agent reading deltas partition *q* owns table partition *q*) and backed by
Faust's compacted changelog topics, from which a worker that takes over a partition restores it.

Faust's consumer can drop messages across a rebalance (it skips and acks events fetched under an
older consumer generation, and its commit can move past them: seen in our scaling test). The agent
therefore does not trust it for completeness: a third table, ``deltas_progress``, records per
deltas partition the last offset applied (changelogged after the keys it covers), and a message
that arrives beyond the next expected offset first makes the agent read the skipped range itself
(a plain consumer assigned to that partition) and apply it. Replays are harmless (watermarks).
A skip at the very end of the deltas has no later message to reveal it: a timer watches the
agent's partitions, and one whose applied offset stays behind the partition's end for
``TAIL_IDLE_S`` gets an empty delta message appended -- which arrives beyond the gap and so makes
the agent read the skipped range as above (an empty delta changes nothing; if the agent was
merely slow, it costs one tiny message).

For each delta message the agent folds every key's contributions into its state
(:class:`models.aggregates.Aggregator`: contributions at or below the key's watermark are skipped,
so redelivered deltas change nothing) and sends the key's current value to the table's topic in
ksqlDB's format (:mod:`models.tables`) -- also when a replay left the state unchanged, in case the
first send was lost with a crash. Faust flushes the producer (changelog and table topics) before it
commits the deltas offset, so a committed delta is always reflected in both.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition

from app.core import metrics
from app.tables.deltas import read_delta
from app.tables.state import BUYERS_TABLE, PROGRESS_TABLE, state_table_names
from models.aggregates import AGGREGATORS, Buyers
from models.tables import TABLES, encode_value

__all__ = ["register_table_agent"]

logger = logging.getLogger(__name__)

EXIT_UNEXPECTED = 70


TAIL_IDLE_S = 10.0
"""How long a deltas partition may stay behind its end with nothing applied before it is poked."""
EMPTY_DELTA = b'{"t":{}}'


def register_table_agent(
    app: faust.App,
    deltas_topic: str,
    partitions: int,
    output_topics: Mapping[str, str],
    client_options: Mapping[str, Any],
) -> Any:
    """Define the Faust tables and the agent on ``app``.

    ``output_topics`` maps table → changelog topic; ``client_options`` are the Kafka connection
    options (:func:`app.core.security.kafka_client_options`) for reading back skipped deltas.
    """
    stores = {
        name: app.Table(
            name,
            default=None,
            partitions=partitions,
            key_type=str,  # keys and values travel as JSON (Faust's default for non-model types)
            help=f"txlake state of {name}",
        )
        for name in state_table_names()
    }
    buyers = Buyers(stores[BUYERS_TABLE])
    outputs = {
        table: app.topic(topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
        for table, topic in output_topics.items()
    }
    deltas = app.topic(
        deltas_topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw", partitions=partitions
    )

    updates = {table: metrics.TABLE_UPDATES.labels(table) for table in TABLES}  # labels() per key costs

    def apply(value: bytes) -> None:
        for table, keys in read_delta(value).items():
            aggregator, store, output = AGGREGATORS[table], stores[table], outputs.get(table)
            key_buyers = buyers if table == "product_purchase_counts" else None
            changed = 0
            for key, contributed in keys.items():
                before = store.get(key)
                state = aggregator.fold(before, contributed, key, key_buyers)
                if state != before:
                    store[key] = state
                    changed += 1
                if output is not None:
                    output.send_soon(key=key.encode(), value=encode_value(aggregator.value(state)))
            updates[table].inc(changed)

    progress = stores[PROGRESS_TABLE]
    applied_at: dict[int, float] = {}  # time.monotonic() a message of the partition was last applied

    async def fold_deltas(stream: faust.StreamT) -> None:
        async for event in stream.events():
            partition, offset = event.message.partition, event.message.offset
            try:
                applied = progress.get(str(partition))
                expected = 0 if applied is None else applied + 1
                if offset > expected:
                    metrics.TABLE_DELTA_GAPS.inc()
                    logger.warning("table agent: deltas %s[%d] %d..%d were skipped by the consumer; reading them",
                                   deltas_topic, partition, expected, offset - 1)
                    async for skipped in read_range(client_options, deltas_topic, partition, expected, offset):
                        apply(skipped)
                apply(event.value)
                progress[str(partition)] = max(offset, -1 if applied is None else applied)
                applied_at[partition] = time.monotonic()
            except Exception:
                # Deltas are written by txlake: failing on one is a bug. Never ack it (Faust
                # would skip it): stop the process, the restart replays it.
                logger.critical("table agent: cannot apply a delta message, exiting", exc_info=True)
                logging.shutdown()
                os._exit(EXIT_UNEXPECTED)

    async def poke_skipped_tails() -> None:
        """Append an empty delta to each owned partition whose end the agent has not applied for a while."""
        if getattr(app, "rebalancing", False):
            return
        owned = [tp for tp in app.assignor.assigned_actives() if tp.topic == deltas_topic]
        if not owned:
            return
        ends = await app.consumer.highwaters(*owned)
        now = time.monotonic()
        for tp in owned:
            applied = progress.get(str(tp.partition))
            behind = tail_behind(applied, ends.get(tp), applied_at.setdefault(tp.partition, now), now)
            if behind:
                metrics.TABLE_DELTA_GAPS.inc()
                logger.warning("table agent: deltas %s[%d] applied through %s of %s for %.0f s; poking it",
                               deltas_topic, tp.partition, applied, ends.get(tp), TAIL_IDLE_S)
                await deltas.send(value=EMPTY_DELTA, partition=tp.partition)
                applied_at[tp.partition] = now  # one poke per idle period

    app.timer(interval=TAIL_IDLE_S / 2, name="txlake.tables_tail_check")(poke_skipped_tails)
    return app.agent(deltas, name="txlake.tables")(fold_deltas)


def tail_behind(applied: int | None, end: int | None, idle_since: float, now: float) -> bool:
    """Whether a deltas partition needs a poke: messages up to ``end`` (exclusive) exist, the agent
    applied only through ``applied`` (None: nothing), and nothing since ``idle_since`` (when it last
    applied a message, or when the check first looked) for ``TAIL_IDLE_S``."""
    if end is None or (-1 if applied is None else applied) >= end - 1:
        return False
    return now - idle_since >= TAIL_IDLE_S


async def read_range(
    client_options: Mapping[str, Any], topic: str, partition: int, start: int, end: int
) -> AsyncIterator[bytes]:
    """The values of ``topic[partition]`` from ``start`` (or the earliest retained) up to ``end`` (excluded)."""
    consumer = AIOKafkaConsumer(**client_options, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, start)
        while await consumer.position(tp) < end:
            for record in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                if record.offset >= end:
                    return
                yield record.value
    finally:
        await consumer.stop()
