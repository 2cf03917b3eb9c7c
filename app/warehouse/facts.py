"""The fact sink: a table feed's changelog kept current in its fact table's live rows.

Live rows are the fact rows with ``snapshot_version = 0``. For a batch of one (feed, topic,
partition) the sink, inside one MySQL transaction
(:func:`~app.warehouse.ledger.land_in_transaction`):

1. locks the ledger row and drops the records at or below ``landed_through`` (a replay);
2. reduces the batch to the last change per key (offset order), so a key updated 50 times in a
   batch is written once;
3. completes the dimension: a fact whose user or payment method is not in its dimension yet gets an
   *inferred* member (``is_inferred = TRUE``; Kimball's late-arriving dimension), which the
   transaction stream's dimension upsert completes later -- never a foreign-key error, never a
   dropped fact;
4. upserts the changed keys (``INSERT … ON DUPLICATE KEY UPDATE``; never ``REPLACE``) and deletes
   the tombstoned ones;
5. advances the ledger and commits.

A tombstone for a key that is neither in the table nor upserted earlier in the batch is bad input:
it goes to the dead-letter topic (published before the commit: at least once, like every dead
letter) and changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiomysql

from app.core.dead_letters import DeadLetter, DeadLetterPublisher
from app.core.settings import MySQLSettings
from app.core.sink import Batch, Sink
from app.warehouse.ledger import MySQLLedger, land_in_transaction
from app.warehouse.mysql import MySQLPool
from models.tables import TableRow, TableSpec, encode_key

__all__ = ["FactSink", "UNKNOWN_KEY"]

UNKNOWN_KEY = "unknown_key"
"""Dead-letter reason of a tombstone for a key the table does not hold."""

_LIVE = 0  # snapshot_version of the live rows


class FactSink(Sink):
    """Lands table feeds into their fact tables' live rows."""

    name = "facts"

    def __init__(self, settings: MySQLSettings, dead_letters: DeadLetterPublisher | None) -> None:
        self.pool = MySQLPool(settings)
        self.ledger = MySQLLedger(self.pool)
        self.dead_letters = dead_letters

    async def start(self) -> None:
        await self.pool.start()

    async def write(self, batch: Batch) -> int:
        return await land_in_transaction(self.pool, self.ledger, batch, self._land)

    async def probe(self) -> None:
        await self.pool.ping()

    async def stop(self) -> None:
        await self.pool.stop()

    async def _land(self, cursor: aiomysql.Cursor, pending: Batch) -> int:
        spec = pending.feed.table_spec
        tombstoned = {r.key for r in pending.records if r.is_tombstone}
        existing = await _live_keys(cursor, spec, tombstoned)
        final, unknown = _last_change_per_key(pending.records, pending.offsets, existing)
        upserts = sorted((k, v) for k, v in final.items() if v is not None)
        deletes = sorted(k for k, v in final.items() if v is None)
        if spec.dimension is not None and upserts:
            await _infer_members(cursor, spec, upserts)
        if upserts:
            await cursor.executemany(_upsert_sql(spec), [(*k, *_values(spec, v), _LIVE) for k, v in upserts])
        if deletes:
            await cursor.executemany(_delete_sql(spec), [(*k, _LIVE) for k in deletes])
        if unknown:
            if self.dead_letters is None:
                raise RuntimeError("a fact sink built without a dead-letter publisher (read-only) was asked to write")
            await self.dead_letters.publish([_unknown_tombstone(pending, spec, offset, k) for offset, k in unknown])
        return len(pending.records) - len(unknown)


def _last_change_per_key(
    records: Sequence[TableRow], offsets: Sequence[int], existing: set[tuple[str, ...]]
) -> tuple[dict[tuple[str, ...], Any], list[tuple[int, tuple[str, ...]]]]:
    """``({key: value or None (delete)}, [(offset, key) of tombstones for unknown keys])``."""
    present = set(existing)
    final: dict[tuple[str, ...], Any] = {}
    unknown: list[tuple[int, tuple[str, ...]]] = []
    for offset, record in zip(offsets, records, strict=True):
        if record.is_tombstone:
            if record.key not in present:
                unknown.append((offset, record.key))
                continue
            present.discard(record.key)
            final[record.key] = None
        else:
            present.add(record.key)
            final[record.key] = record.value
    return final, unknown


async def _live_keys(cursor: aiomysql.Cursor, spec: TableSpec, keys: set[tuple[str, ...]]) -> set[tuple[str, ...]]:
    """Which of ``keys`` have a live row (locked until the commit)."""
    if not keys:
        return set()
    match = " AND ".join(f"{column} = %s" for column in spec.key_columns)
    found: set[tuple[str, ...]] = set()
    for k in sorted(keys):
        await cursor.execute(
            f"SELECT 1 FROM {spec.fact_table} WHERE {match} AND snapshot_version = %s FOR UPDATE", (*k, _LIVE)
        )
        if await cursor.fetchone() is not None:
            found.add(k)
    return found


async def _infer_members(cursor: aiomysql.Cursor, spec: TableSpec, upserts: list[tuple[tuple[str, ...], Any]]) -> None:
    """Insert an inferred dimension member for every fact key whose member is missing."""
    assert spec.dimension is not None
    table, column = spec.dimension
    position = spec.key_columns.index(column)
    members = sorted({k[position] for k, _ in upserts})
    marks = ", ".join(["%s"] * len(members))
    await cursor.execute(f"SELECT {column} FROM {table} WHERE {column} IN ({marks})", members)
    known = {row[0] for row in await cursor.fetchall()}
    missing = [member for member in members if member not in known]
    if missing:
        # ON DUPLICATE KEY … no-op: another writer may have added the member since the SELECT.
        await cursor.executemany(
            f"INSERT INTO {table} ({column}, is_inferred) VALUES (%s, TRUE) ON DUPLICATE KEY UPDATE {column} = {column}",
            [(member,) for member in missing],
        )


def _values(spec: TableSpec, value: Any) -> tuple[Any, ...]:
    return tuple(getattr(value, column) for column in spec.value_columns)


def _upsert_sql(spec: TableSpec) -> str:
    columns = (*spec.columns, "snapshot_version")
    updates = ", ".join(f"{column} = VALUES({column})" for column in spec.value_columns)
    return (
        f"INSERT INTO {spec.fact_table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))}) "
        f"ON DUPLICATE KEY UPDATE {updates}"
    )


def _delete_sql(spec: TableSpec) -> str:
    match = " AND ".join(f"{column} = %s" for column in spec.key_columns)
    return f"DELETE FROM {spec.fact_table} WHERE {match} AND snapshot_version = %s"


def _unknown_tombstone(batch: Batch, spec: TableSpec, offset: int, key: tuple[str, ...]) -> DeadLetter:
    return DeadLetter(
        batch.topic,
        batch.partition,
        offset,
        encode_key(spec, key),
        None,
        UNKNOWN_KEY,
        "UnknownKey",
        f"tombstone for a key {spec.name} does not hold: {', '.join(key)}",
    )
