"""What ``txlake verify`` reads: Kafka's positions, the dead-letter topic, the lake, the warehouse.

Everything here is read-only and safe while workers run. Reads are kept narrow: the lake is
read column-wise (only ``_kafka_partition``, ``_kafka_offset`` and the dimension keys), the
dead-letter topic only for its ``__connect.errors.*`` headers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import aiomysql
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from aiokafka import AIOKafkaConsumer, TopicPartition

from app.core.feeds import Feed
from app.core.security import kafka_client_options, mysql_ssl_context
from app.core.settings import LakeSettings, Settings
from app.lake.delta import open_table, read_position, to_dataset
from app.lake.storage import LakeStorage
from app.lake.view import stream_view, vanished
from app.ops.kafka_positions import KafkaPositions
from app.ops.records import record_offsets
from models.tables import TableSpec

__all__ = [
    "DeadLetterIndex",
    "FactSnapshot",
    "delta_lake_columns",
    "dimension_keys",
    "feed_lake_columns",
    "keys_through",
    "lake_columns",
    "live_fact_snapshot",
    "non_record_offsets",
    "offsets_by_partition",
    "read_dead_letters",
    "read_partition",
    "warehouse_ledgers",
]

_TOPIC, _PARTITION, _OFFSET = "__connect.errors.topic", "__connect.errors.partition", "__connect.errors.offset"

DeadLetterIndex = dict[tuple[str, int], list[int]]
"""(source topic, partition) -> the offsets of its dead letters, one entry per dead letter."""


async def read_dead_letters(settings: Settings, kafka: KafkaPositions, idle_timeout_s: float = 10.0) -> DeadLetterIndex:
    """Every dead letter's source coordinates, from the log start of the topic to the end in ``kafka``."""
    index: DeadLetterIndex = defaultdict(list)
    ends = {
        tp: last + 1
        for tp, last in kafka.last_offset.items()
        if tp.topic == settings.dead_letter_topic and last >= kafka.log_start[tp]
    }
    if not ends:
        return index
    consumer = AIOKafkaConsumer(
        **kafka_client_options(settings.kafka), enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        pending = set(ends)
        while pending:
            fetched = await consumer.getmany(*pending, timeout_ms=int(idle_timeout_s * 1000), max_records=10_000)
            if not fetched:
                raise TimeoutError(f"dead-letter topic {settings.dead_letter_topic}: no records for {idle_timeout_s}s")
            for tp, messages in fetched.items():
                for message in messages:
                    headers = dict(message.headers or ())
                    try:
                        where = (headers[_TOPIC].decode(), int(headers[_PARTITION]))
                        index[where].append(int(headers[_OFFSET]))
                    except (KeyError, ValueError, UnicodeDecodeError):
                        index[("", -1)].append(message.offset)  # not a txlake/Connect dead letter
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
    finally:
        await consumer.stop()
    return index


async def non_record_offsets(settings: Settings, tp: TopicPartition, span: tuple[int, int]) -> np.ndarray:
    """The offsets in ``span`` (inclusive) that hold no committed record: transaction markers, aborted records.

    Read with ``read_committed`` up to the last stable offset (offsets of an open transaction are
    left out: they are neither records yet nor known gaps).
    """
    first, last = span
    consumer = AIOKafkaConsumer(
        **kafka_client_options(settings.kafka), enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        last = min(last, (await consumer.end_offsets([tp]))[tp] - 1)
        held = await record_offsets(consumer, tp, first, last)
    finally:
        await consumer.stop()
    every = np.arange(first, last + 1, dtype=np.int64)
    return np.setdiff1d(every, np.asarray(held, dtype=np.int64), assume_unique=True)


async def read_partition(
    consumer: AIOKafkaConsumer, tp: TopicPartition, first: int, last: int, idle_timeout_s: float = 10.0
) -> list[tuple[int, bytes | None, bytes | None]]:
    """``(offset, key, value)`` of one partition's messages from ``first`` through ``last`` (inclusive).

    ``consumer`` is started and not subscribed; the partition becomes its only assignment.
    """
    if last < first:
        return []
    consumer.assign([tp])
    consumer.seek(tp, first)
    messages: list[tuple[int, bytes | None, bytes | None]] = []
    while await consumer.position(tp) <= last:
        fetched = await consumer.getmany(tp, timeout_ms=int(idle_timeout_s * 1000), max_records=50_000)
        if not fetched:
            raise TimeoutError(f"{tp.topic}[{tp.partition}]: no records for {idle_timeout_s}s before offset {last}")
        messages.extend((m.offset, m.key, m.value) for m in fetched.get(tp, ()) if m.offset <= last)
    return messages


def lake_columns(storage: LakeStorage, dataset: str, columns: list[str], attempts: int = 5) -> pa.Table | None:
    """Only ``columns`` of a dataset's visible files (never staged ones); None when it has none.

    The files are those of the catalog's view (:func:`app.lake.view.stream_view`), without its row
    filter: compacted files count like any other, and during an S3 compaction the journal's outputs
    stand in for the files it replaced, so verify sees every row once while compaction runs. A file
    that vanishes between listing and reading (a compaction replaced it) makes it look again.
    """
    for attempt in range(attempts):
        view = stream_view(storage, dataset)
        files = view.to_dataset(storage, visible_only=False)
        if files is None:
            return None
        try:
            return files.to_table(columns=columns)
        except OSError as exc:
            if attempt == attempts - 1 or not vanished(exc):
                raise
    raise AssertionError("unreachable")


def delta_lake_columns(
    lake: LakeSettings, feed: Feed, partitions: Iterable[int], columns: list[str]
) -> tuple[dict[int, int], pa.Table | None]:
    """The positions of ``partitions`` and ``columns`` of the rows, from one version of the feed's Delta table.

    Reading both from the same version makes them agree exactly (the hive format reads its ledgers
    first and its rows second instead). No table yet: positions -1 and no rows.
    """
    table = open_table(lake, feed.dataset)
    positions = {p: read_position(table, feed.topic, p) for p in partitions}
    if table is None:
        return positions, None
    return positions, to_dataset(table).to_table(columns=columns)


def offsets_by_partition(table: pa.Table | None) -> dict[int, np.ndarray]:
    """The ``_kafka_offset`` values of each ``_kafka_partition`` (repeats kept)."""
    if table is None or table.num_rows == 0:
        return {}
    partitions = table.column("_kafka_partition").to_numpy()
    offsets = table.column("_kafka_offset").to_numpy()
    return {int(p): offsets[partitions == p] for p in np.unique(partitions)}


def keys_through(table: pa.Table, partition_ledgers: dict[int, int], column: str) -> set[str]:
    """Distinct values of ``column`` on rows at or below their partition's warehouse ledger."""
    keep = None
    for partition, through in partition_ledgers.items():
        rows = pc.and_(pc.equal(table.column("_kafka_partition"), partition), pc.less_equal(table.column("_kafka_offset"), through))
        keep = rows if keep is None else pc.or_(keep, rows)
    if keep is None:
        return set()
    return set(pc.unique(table.column(column).filter(keep)).to_pylist())


async def _connect(settings: Settings) -> aiomysql.Connection:
    s = settings.mysql
    return await aiomysql.connect(
        host=s.host, port=s.port, user=s.user, password=s.password.get_secret_value(), db=s.database,
        charset="utf8mb4", connect_timeout=s.connect_timeout_s, autocommit=True, ssl=mysql_ssl_context(s),
        # A reader must not hang behind a LOCK TABLES either.
        init_command=f"SET lock_wait_timeout = {s.lock_wait_timeout_s}, innodb_lock_wait_timeout = {s.lock_wait_timeout_s}",
    )


async def warehouse_ledgers(settings: Settings) -> dict[tuple[str, str, int], int]:
    """``txlake_offset_ledger`` as {(feed, topic, partition): landed_through}."""
    connection = await _connect(settings)
    try:
        async with connection.cursor() as cursor:
            await cursor.execute("SELECT feed, topic, kafka_partition, landed_through FROM txlake_offset_ledger")
            return {(feed, topic, int(p)): int(through) for feed, topic, p, through in await cursor.fetchall()}
    finally:
        connection.close()


@dataclass(frozen=True)
class FactSnapshot:
    """One consistent read of a table feed's fact ledger and its fact table's live rows."""

    ledgers: dict[int, int]  # partition -> landed_through
    rows: dict[tuple[str, ...], tuple]  # key columns -> value columns (TableSpec order)
    orphans: list[str]  # live facts' dimension keys without a dimension row (sorted)


async def live_fact_snapshot(settings: Settings, spec: TableSpec, feed: str, topic: str) -> FactSnapshot:
    """The feed's ledger rows, the live fact rows and their orphaned dimension keys, in one snapshot.

    The fact sink commits rows and ledger together, so reading them in one consistent snapshot
    pairs them exactly while workers run. Names come from :data:`models.tables.TABLES`, not input.
    """
    keys = len(spec.key_columns)
    connection = await _connect(settings)
    try:
        async with connection.cursor() as cursor:
            await cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            await cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            await cursor.execute(
                "SELECT kafka_partition, landed_through FROM txlake_offset_ledger WHERE feed = %s AND topic = %s",
                (feed, topic),
            )
            ledgers = {int(p): int(through) for p, through in await cursor.fetchall()}
            await cursor.execute(f"SELECT {', '.join(spec.columns)} FROM {spec.fact_table} WHERE snapshot_version = 0")
            rows = {tuple(row[:keys]): tuple(row[keys:]) for row in await cursor.fetchall()}
            orphans: list[str] = []
            if spec.dimension is not None:
                table, column = spec.dimension
                await cursor.execute(
                    f"SELECT DISTINCT f.{column} FROM {spec.fact_table} f LEFT JOIN {table} d ON d.{column} = f.{column} "
                    f"WHERE f.snapshot_version = 0 AND d.{column} IS NULL ORDER BY f.{column}"
                )
                orphans = [row[0] for row in await cursor.fetchall()]
            await cursor.execute("COMMIT")
    finally:
        connection.close()
    return FactSnapshot(ledgers, rows, orphans)


async def dimension_keys(settings: Settings, table: str, key_column: str) -> set[str]:
    """Every key of a dimension table (names come from :data:`models.dimensions.DIMENSIONS`, not input)."""
    connection = await _connect(settings)
    try:
        async with connection.cursor() as cursor:
            await cursor.execute(f"SELECT {key_column} FROM {table}")
            return {row[0] for row in await cursor.fetchall()}
    finally:
        connection.close()


def feed_lake_columns(feed: Feed) -> list[str]:
    """The lake columns verify needs for a feed: its position plus the keys of its dimensions."""
    from models.dimensions import DIMENSIONS

    return ["_kafka_partition", "_kafka_offset", *dict.fromkeys(DIMENSIONS[t].key_column for t in feed.warehouse)]
