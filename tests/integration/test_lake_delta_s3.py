"""lake.format = "delta" on S3 (moto in server mode): commits by conditional PUT, positions, readers, the worker.

delta-rs commits a version by creating ``_delta_log/<version>.json`` only if it is absent: on S3 a
PUT with ``If-None-Match: *``, which moto honours (a second PUT of the key gets 412). Two processes
appending to one table at once therefore never overwrite each other's version; the test proves it
by counting every commit's rows afterwards.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from deltalake import DeltaTable

from app.core.settings import LakeSettings
from app.core.sink import Batch
from app.lake.delta import app_id, storage_options, table_uri
from app.lake.delta_sink import DeltaLakeSink
from tests.integration.harness import REPO_ROOT
from tests.integration.test_lake_s3 import (
    FEED,
    _objects,
    s3_endpoint,  # noqa: F401 - fixture
)
from tests.integration.test_lake_s3 import lake as s3_lake  # noqa: F401 - fixture
from tools.loadgen import generate

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture
def lake(s3_lake: LakeSettings) -> LakeSettings:  # noqa: F811 - the S3 lake, in the Delta format
    return s3_lake.model_copy(update={"format": "delta"})


def _batch(records, first_offset: int = 0, partition: int = 0) -> Batch:
    offsets = list(range(first_offset, first_offset + len(records)))
    return Batch(FEED, partition, offsets[0], offsets[-1], records, offsets)


def _table(lake: LakeSettings) -> DeltaTable:
    return DeltaTable(table_uri(lake, FEED.dataset), storage_options=storage_options(lake))


@pytest.fixture
def records():
    return list(generate(800, seed=5, now=NOW, days=3, late_fraction=0.1))


async def test_a_flush_of_four_partitions_is_one_commit_on_s3(lake, records):
    sink = DeltaLakeSink(lake)
    await sink.start()
    await sink.probe()
    batches = [_batch(records[p * 200:(p + 1) * 200], partition=p) for p in range(4)]
    assert await asyncio.gather(*(sink.write(b) for b in batches)) == [200] * 4
    assert await asyncio.gather(*(sink.write(b) for b in batches)) == [0] * 4  # replays
    table = _table(lake)
    assert table.version() == 0  # one commit, the replays committed nothing
    assert table.count() == 800
    assert [table.transaction_version(app_id("tx", p)) for p in range(4)] == [199] * 4
    keys = _objects(lake, FEED.dataset)
    assert "streams/transaction_stream/_delta_log/00000000000000000000.json" in keys
    data = [key for key in keys if "/_delta_log/" not in key]
    assert data and all(key.startswith("streams/transaction_stream/year=20") and key.endswith(".parquet") for key in data)
    # A restarted worker, progress and verify read the positions from the log on S3.
    assert await DeltaLakeSink(lake).position(FEED, 3) == 199
    assert await DeltaLakeSink(lake).ledger.read(FEED, 0) == 199


async def test_polars_reads_the_s3_table(lake, records):
    import polars as pl

    await DeltaLakeSink(lake).write(_batch(records))
    frame = pl.read_delta(table_uri(lake, FEED.dataset), storage_options=storage_options(lake))
    assert frame.height == len(records)
    assert sorted(frame["_kafka_offset"].to_list()) == list(range(len(records)))


_APPEND_MANY = """
import asyncio, json, sys
from datetime import UTC, datetime
from app.core.settings import LakeSettings
from app.core.sink import Batch
from app.lake.delta_sink import DeltaLakeSink
from tests.integration.test_lake_s3 import FEED
from tools.loadgen import generate

settings = LakeSettings(**json.loads(sys.argv[1]))  # python mode: root stays an s3:// string
partition, commits, size = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
records = list(generate(commits * size, seed=partition, now=datetime(2026, 11, 25, 12, tzinfo=UTC)))

async def main():
    sink = DeltaLakeSink(settings)
    for n in range(commits):
        offsets = list(range(n * size, (n + 1) * size))
        await sink.write(Batch(FEED, partition, offsets[0], offsets[-1], records[n * size:(n + 1) * size], offsets))

asyncio.run(main())
"""


async def test_two_processes_appending_at_once_lose_no_commit(lake, records):
    """Conditional PUTs on S3: every commit of two racing processes is in the log, none overwritten."""
    await DeltaLakeSink(lake).write(_batch(records[:10], partition=9))  # the table exists before the race
    commits, size = 20, 25
    settings = json.dumps({**json.loads(lake.model_dump_json()), "s3_secret_access_key": lake.s3_secret_access_key.get_secret_value()})
    racers = [
        subprocess.Popen([sys.executable, "-c", _APPEND_MANY, settings, str(p), str(commits), str(size)], cwd=REPO_ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for p in (0, 1)
    ]
    for racer in racers:
        output, _ = await asyncio.to_thread(racer.communicate, timeout=240)
        assert racer.returncode == 0, output.decode(errors="replace")[-3000:]
    table = _table(lake)
    assert table.version() == 2 * commits  # version 0 plus one per commit: none lost, none merged away
    rows = table.to_pyarrow_table(columns=["_kafka_partition", "_kafka_offset"])
    for p in (0, 1):
        positions = zip(rows.column("_kafka_partition").to_pylist(), rows.column("_kafka_offset").to_pylist(), strict=True)
        offsets = sorted(o for q, o in positions if q == p)
        assert offsets == list(range(commits * size))
        assert table.transaction_version(app_id("tx", p)) == commits * size - 1


async def test_the_worker_lands_the_streams_in_an_s3_delta_lake(lake, deploy):
    from app.ops.progress import wait_until_landed
    from models.derive import flatten
    from tests.integration.harness import produce_demo

    now = datetime(2026, 11, 25, 11, 0, tzinfo=UTC)
    deployment = await deploy(
        TXLAKE_LAKE__ROOT=str(lake.root),
        TXLAKE_LAKE__FORMAT="delta",
        TXLAKE_LAKE__S3_ENDPOINT_URL=lake.s3_endpoint_url,
        TXLAKE_LAKE__S3_REGION=lake.s3_region,
        TXLAKE_LAKE__S3_ACCESS_KEY_ID=lake.s3_access_key_id,
        TXLAKE_LAKE__S3_SECRET_ACCESS_KEY=lake.s3_secret_access_key.get_secret_value(),
    )
    worker = deployment.worker().start()
    await produce_demo(deployment, 1500, seed=51, now=now)
    await wait_until_landed(deployment.settings, deployment.feeds, timeout_s=180)
    assert worker.alive(), worker.log()[-3000:]
    produced = list(generate(1500, seed=51, now=now))
    for feed_name, expected in [
        ("transaction_stream", len(produced)),
        ("transaction_flattened", sum(len(flatten(tx)) for tx in produced)),
    ]:
        # Progress read the positions from the log: the rows of those commits are there, no wait.
        table = DeltaTable(table_uri(lake, deployment.feed(feed_name).dataset), storage_options=storage_options(lake))
        rows = table.to_pyarrow_table(columns=["_kafka_partition", "_kafka_offset"])
        positions = set(zip(rows.column("_kafka_partition").to_pylist(), rows.column("_kafka_offset").to_pylist(), strict=True))
        assert rows.num_rows == len(positions) == expected, feed_name
