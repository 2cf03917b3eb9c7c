"""Delta Lake tables of the lake (``lake.format = "delta"``): where they are, how they are opened.

Each stream dataset (``streams/<stream>``) is one Delta table at ``<root>/streams/<stream>``,
written with delta-rs (the ``deltalake`` package):

- partitioned by ``year``, ``month``, ``day`` -- zero-padded *strings* of the record's
  ``event_timestamp`` day in UTC, so the directories stay ``year=YYYY/month=MM/day=DD`` (integer
  partition columns would give ``month=3``);
- the Kafka position of a (topic, partition) lives in the table's log as a Delta *application
  transaction* (``txn`` action) whose ``appId`` is :func:`app_id` and whose ``version`` is the
  highest offset the table holds, written in the same commit as the rows (kafka-delta-ingest's
  scheme): the table alone says what it holds, no ledger beside it;
- columns are those of the record kind plus the partition columns, all *nullable* in the Delta
  schema: a column added by a newer txlake merges into the table (``schema_mode="merge"``) and an
  older worker still writing during a rolling upgrade leaves it null instead of failing a NOT NULL
  check;
- ``delta.checkpointInterval`` is :data:`CHECKPOINT_INTERVAL` (10): delta-rs writes a checkpoint
  after every tenth commit, which keeps the cost of opening the table and of a commit flat.

The helpers here are I/O at the edge (open a table, read positions); the sink and the
maintenance build on them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from app.core.feeds import Feed
from app.core.settings import LakeSettings

__all__ = [
    "CHECKPOINT_INTERVAL",
    "DeltaLedger",
    "PARTITION_COLUMNS",
    "app_id",
    "is_delta_table",
    "open_table",
    "read_position",
    "storage_options",
    "table_configuration",
    "table_uri",
    "to_dataset",
    "with_day_columns",
]

logger = logging.getLogger(__name__)

PARTITION_COLUMNS = ["year", "month", "day"]
CHECKPOINT_INTERVAL = 10
APP_ID_PREFIX = "txlake"


def app_id(topic: str, partition: int) -> str:
    """The application-transaction id of a Kafka (topic, partition): ``txlake-<topic>-<partition>``.

    kafka-delta-ingest names its ids ``<app>-<partition>``; the topic is part of ours so that a
    table fed from two topics (or a topic renamed) never shares a position.
    """
    return f"{APP_ID_PREFIX}-{topic}-{partition}"


def table_configuration(checkpoint_interval: int = CHECKPOINT_INTERVAL) -> dict[str, str | None]:
    """Table properties set when txlake creates a table."""
    return {"delta.checkpointInterval": str(checkpoint_interval)}


def table_uri(settings: LakeSettings, dataset: str) -> str:
    """The Delta table URI of ``dataset`` (an absolute local path, or ``s3://bucket/prefix/dataset``)."""
    if settings.is_s3:
        return f"{str(settings.root).rstrip('/')}/{dataset}"
    return str((Path(settings.root) / dataset).resolve())


def storage_options(settings: LakeSettings) -> dict[str, str]:
    """delta-rs (object_store) options from the ``lake`` settings; empty for a local lake.

    Unset keys leave the AWS defaults (environment, web identity / IRSA, instance profile). Commits
    on S3 use conditional PUTs (``If-None-Match``), the default of delta-rs 1.x: no DynamoDB lock.
    """
    if not settings.is_s3:
        return {}
    options: dict[str, str] = {}
    if settings.s3_endpoint_url:
        options["AWS_ENDPOINT_URL"] = settings.s3_endpoint_url
        if urlsplit(settings.s3_endpoint_url).scheme == "http":
            options["AWS_ALLOW_HTTP"] = "true"
    if settings.s3_region:
        options["AWS_REGION"] = settings.s3_region
    if settings.s3_access_key_id or settings.s3_secret_access_key:
        if not (settings.s3_access_key_id and settings.s3_secret_access_key):
            raise ValueError("lake.s3_access_key_id and lake.s3_secret_access_key go together")
        options["AWS_ACCESS_KEY_ID"] = settings.s3_access_key_id
        options["AWS_SECRET_ACCESS_KEY"] = settings.s3_secret_access_key.get_secret_value()
    return options


def is_delta_table(settings: LakeSettings, dataset: str) -> bool:
    """Whether ``dataset`` is a Delta table (has a ``_delta_log``) under the lake root."""
    from deltalake import DeltaTable

    return DeltaTable.is_deltatable(table_uri(settings, dataset), storage_options(settings) or None)


def open_table(settings: LakeSettings, dataset: str):  # -> deltalake.DeltaTable | None
    """The latest version of ``dataset``'s table, or ``None`` while it does not exist yet."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(table_uri(settings, dataset), storage_options=storage_options(settings) or None)
    except TableNotFoundError:
        return None


def read_position(table, topic: str, partition: int) -> int:  # table: deltalake.DeltaTable | None
    """The highest offset of (topic, partition) the table's version holds; -1 for none."""
    if table is None:
        return -1
    version = table.transaction_version(app_id(topic, partition))
    return -1 if version is None else int(version)


def with_day_columns(rows: pa.Table) -> pa.Table:
    """``rows`` with the partition columns appended and every top-level column nullable.

    ``year``/``month``/``day`` are the zero-padded UTC day of ``event_timestamp``
    (``"2026"``, ``"03"``, ``"07"``).
    """
    days = pc.cast(rows.column("event_timestamp"), pa.date32())
    text = pc.strftime(days, format="%Y-%m-%d")  # one formatting pass, three slices
    parts = [pc.utf8_slice_codeunits(text, start, stop) for start, stop in ((0, 4), (5, 7), (8, 10))]
    fields = [field.with_nullable(True) for field in rows.schema]
    fields += [pa.field(name, pa.string(), nullable=True) for name in PARTITION_COLUMNS]
    return pa.Table.from_arrays([*rows.columns, *parts], schema=pa.schema(fields))


def to_dataset(table):  # table: deltalake.DeltaTable -> pyarrow.dataset.Dataset
    """The rows of ``table``'s version as a pyarrow dataset: exactly the files its log names.

    Partition columns come back as the table stores them (strings: ``"2026"``, ``"03"``).
    """
    return table.to_pyarrow_dataset()


class DeltaLedger:
    """The Kafka positions in the Delta logs of a lake: the :class:`~app.core.sink.Ledger` of the Delta sink.

    :meth:`read` sees the latest committed version (safe while workers run: a commit is one
    file, seen whole or not at all). One table object per dataset is kept and brought up to date
    incrementally (only the commits since the last read are fetched).
    """

    def __init__(self, settings: LakeSettings) -> None:
        self.settings = settings
        self._tables: dict[str, object] = {}
        self._lock = threading.Lock()

    async def read(self, feed: Feed, partition: int) -> int:
        return await asyncio.to_thread(self.position, feed.dataset, feed.topic, partition)

    def position(self, dataset: str, topic: str, partition: int) -> int:
        """:meth:`read`, blocking (tools, threads)."""
        with self._lock:
            table = self._tables.get(dataset)
            if table is None:
                table = open_table(self.settings, dataset)
                if table is None:
                    return -1
                self._tables[dataset] = table
            else:
                table.update_incremental()
            return read_position(table, topic, partition)
