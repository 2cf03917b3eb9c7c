"""Where a version's rows come from.

* :func:`live_rows` -- the warehouse's live state (fact rows with ``snapshot_version = 0``) and the
  table feed's ledger rows, read in ONE consistent snapshot (``START TRANSACTION WITH CONSISTENT
  SNAPSHOT`` at REPEATABLE READ). The live sink commits each batch's upserts together with its
  ledger row, so the rows read are exactly the table as of the ledger offsets read: those become
  the version's ``source_offsets``. Rows are streamed (server-side cursor), never all in memory.
* any ``AsyncIterator[pyarrow.RecordBatch]`` -- e.g. the ksqlDB re-export -- passed through
  :func:`conform`, which picks and casts the table's columns.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from app.core.settings import MySQLSettings
from app.snapshots.db import connect
from app.snapshots.errors import SnapshotError
from models.tables import TableSpec

__all__ = ["RowSource", "conform", "live_rows", "rows_to_batch"]

Offsets = dict[str, dict[str, int]]


@dataclass
class RowSource:
    """A version's rows, and what they reflect (stored with the version)."""

    batches: AsyncIterator[pa.RecordBatch]
    description: dict[str, Any]
    offsets: Offsets | None = field(default=None)


def rows_to_batch(spec: TableSpec, rows: list[tuple[Any, ...]]) -> pa.RecordBatch:
    """Rows in ``spec.columns`` order → a RecordBatch of ``spec.arrow_schema``."""
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(spec.arrow_schema)
    arrays = [pa.array(values, type=f.type) for values, f in zip(columns, spec.arrow_schema, strict=True)]
    return pa.RecordBatch.from_arrays(arrays, schema=spec.arrow_schema)


def conform(spec: TableSpec, batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` with exactly the table's columns (by name, any order, extras dropped) and types.

    Floats cast to the decimal columns round to the column's scale; decimals with more places (the
    ksqlDB statements' EUR sums are ``DECIMAL(38, 10)``) are rounded half-up (away from zero, as
    MariaDB rounds) to it. Raises :class:`SnapshotError` when a column is missing or a value cannot
    be cast (e.g. does not fit the column).
    """
    names = set(batch.schema.names)
    missing = [name for name in spec.columns if name not in names]
    if missing:
        raise SnapshotError(f"{spec.name}: rows lack column(s) {', '.join(missing)}")
    try:
        arrays = [_cast(batch.column(f.name), f.type) for f in spec.arrow_schema]
        return pa.RecordBatch.from_arrays(arrays, schema=spec.arrow_schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise SnapshotError(f"{spec.name}: rows do not fit the table's schema: {exc}") from exc


def _cast(column: pa.Array, kind: pa.DataType) -> pa.Array:
    if pa.types.is_decimal(kind) and pa.types.is_decimal(column.type) and column.type.scale > kind.scale:
        column = pc.round(column, ndigits=kind.scale, round_mode="half_towards_infinity")
    return column.cast(kind)


@contextlib.asynccontextmanager
async def live_rows(settings: MySQLSettings, spec: TableSpec, batch_rows: int) -> AsyncIterator[RowSource]:
    """The live state of ``spec``'s fact table as a :class:`RowSource` (open while in the ``with``).

    ``offsets`` is ``{topic: {partition: landed_through}}`` from ``txlake_offset_ledger`` rows of
    the feed named like the table, read in the same snapshot as the rows.
    """
    async with connect(settings, unbuffered=True) as connection:
        async with connection.cursor() as cursor:
            await cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            await cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            await cursor.execute(
                "SELECT topic, kafka_partition, landed_through FROM txlake_offset_ledger WHERE feed = %s",
                (spec.name,),
            )
            offsets: Offsets = {}
            for topic, partition, landed in await cursor.fetchall():
                offsets.setdefault(topic, {})[str(partition)] = int(landed)
            await cursor.execute(
                f"SELECT {', '.join(spec.columns)} FROM {spec.fact_table} WHERE snapshot_version = 0 "
                f"ORDER BY {', '.join(spec.key_columns)}"
            )

            async def batches() -> AsyncIterator[pa.RecordBatch]:
                while rows := await cursor.fetchmany(batch_rows):
                    yield rows_to_batch(spec, rows)

            description = {"kind": "warehouse_live", "fact_table": spec.fact_table, "feed": spec.name}
            # Leaving the block closes the connection, which ends the read-only transaction.
            yield RowSource(batches(), description, offsets)
