"""The lake sink's commit protocol on S3, against a local S3-compatible server (moto in server mode).

The session fixture starts ``moto_server`` (dev extra ``moto[server]``) on a free 127.0.0.1 port
and stops it at the end; if it cannot start, the tests FAIL (never skip). Each test gets its own
bucket and lands under ``s3://<bucket>/lake``. Kafka and MariaDB are not needed.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pyarrow.dataset as ds
import pytest
from pyarrow import fs as pafs
from pydantic import SecretStr

from app.core.errors import LakeSinkError
from app.core.feeds import Feed
from app.core.settings import LakeSettings
from app.core.sink import Batch
from app.lake.ledger import read_landed_through
from app.lake.sink import LakeSink
from app.lake.storage import ObjectStorage, open_lake_storage
from tools.loadgen import generate
from tools.ports import free_port

pytestmark = pytest.mark.integration

FEED = Feed(name="transaction_stream", topic="tx", record="transaction", dataset="streams/transaction_stream")
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
REGION = "us-east-1"
KEY_ID, SECRET = "txlake-test", "txlake-test-secret"  # moto accepts any credentials
START_TIMEOUT_S = 60.0


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 for the whole session (fails the tests if it cannot start)."""
    executable = Path(sys.executable).parent / "moto_server"
    if not executable.exists():
        pytest.fail(f"{executable} not found: install the dev extra (pip install -c constraints.txt -e '.[dev]')")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("moto") / "moto_server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(executable), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"moto_server exited with {process.returncode}:\n{log_path.read_text(errors='replace')}")
            try:
                httpx.get(endpoint + "/", timeout=1.0)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not answer on {endpoint} within {START_TIMEOUT_S:.0f}s:\n"
                                f"{log_path.read_text(errors='replace')}")
                time.sleep(0.2)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _settings(endpoint: str, bucket: str) -> LakeSettings:
    return LakeSettings(
        root=f"s3://{bucket}/lake",
        s3_endpoint_url=endpoint,
        s3_region=REGION,
        s3_access_key_id=KEY_ID,
        s3_secret_access_key=SecretStr(SECRET),
    )


@pytest.fixture
def lake(s3_endpoint: str) -> LakeSettings:
    """Lake settings for ``s3://<fresh bucket>/lake``."""
    bucket = f"txlake-{uuid.uuid4().hex[:12]}"
    admin = pafs.S3FileSystem(
        access_key=KEY_ID, secret_key=SECRET, region=REGION, scheme="http",
        endpoint_override=s3_endpoint.removeprefix("http://"), allow_bucket_creation=True,
    )
    admin.create_dir(bucket)
    return _settings(s3_endpoint, bucket)


def _storage(lake: LakeSettings) -> ObjectStorage:
    storage = open_lake_storage(lake)
    assert isinstance(storage, ObjectStorage)
    return storage


def _objects(lake: LakeSettings, under: str = "") -> list[str]:
    """Every object (not directory marker) under ``lake/<under>``, relative to the lake root."""
    storage = _storage(lake)
    selector = pafs.FileSelector(storage.key(under), recursive=True, allow_not_found=True)
    base = storage.base + "/"
    return sorted(
        info.path[len(base):] for info in storage.filesystem.get_file_info(selector) if info.type == pafs.FileType.File
    )


def _visible(lake: LakeSettings):
    """What a reader sees: pyarrow.dataset over the dataset prefix, hive partitioning."""
    storage = _storage(lake)
    dataset = ds.dataset(storage.key(FEED.dataset), filesystem=storage.filesystem, format="parquet", partitioning="hive")
    return dataset.to_table()


def _batch(records, first_offset: int = 0, partition: int = 0) -> Batch:
    offsets = list(range(first_offset, first_offset + len(records)))
    return Batch(FEED, partition, offsets[0], offsets[-1], records, offsets)


@pytest.fixture
def records():
    return list(generate(300, seed=3, now=NOW, days=3, late_fraction=0.1))


async def test_a_batch_spanning_days_lands_one_object_per_day(lake, records):
    sink = LakeSink.from_settings(lake)
    await sink.start()
    assert await sink.write(_batch(records)) == len(records)

    files = _objects(lake, "streams")
    days = {(r.event_timestamp.year, r.event_timestamp.month, r.event_timestamp.day) for r in records}
    assert len(files) == len(days) >= 3
    for path in files:
        assert path.startswith("streams/transaction_stream/year=")
        assert path.endswith(".parquet") and "/tx+0+" in path
    assert not _objects(lake, "_txlake/staging")

    table = _visible(lake)
    assert table.num_rows == len(records)
    assert sorted(table.column("_kafka_offset").to_pylist()) == list(range(len(records)))
    assert sorted(table.column("transaction_id").to_pylist()) == sorted(r.transaction_id for r in records)
    columns = (table.column(c).to_pylist() for c in ("year", "month", "day", "event_timestamp"))
    for year, month, day, ts in zip(*columns, strict=True):
        assert (ts.year, ts.month, ts.day) == (year, month, day)
    # The ledger reads the same from a storage, from the settings (txlake progress) and from the sink.
    assert read_landed_through(_storage(lake), FEED.dataset, "tx", 0) == len(records) - 1
    assert read_landed_through(lake, FEED.dataset, "tx", 0) == len(records) - 1
    assert read_landed_through(lake, FEED.dataset, "tx", 1) == -1
    assert await sink.position(FEED, 0) == len(records) - 1


async def test_replays_are_skipped_and_overlaps_land_only_the_new_part(lake, records):
    sink = LakeSink.from_settings(lake)
    await sink.write(_batch(records[:200]))
    assert await sink.write(_batch(records[:200])) == 0
    assert await sink.write(_batch(records[100:], first_offset=100)) == 100
    assert sorted(_visible(lake).column("_kafka_offset").to_pylist()) == list(range(300))
    # A fresh sink (a restarted pod, or another pod taking the partition over) knows what the lake holds.
    restarted = LakeSink.from_settings(lake)
    assert await restarted.write(_batch(records)) == 0
    assert _visible(lake).num_rows == 300


async def test_a_batch_of_only_dead_letters_advances_the_ledger(lake):
    sink = LakeSink.from_settings(lake)
    assert await sink.write(Batch(FEED, 0, 0, 4, [], [])) == 0
    assert read_landed_through(lake, FEED.dataset, "tx", 0) == 4
    assert not _objects(lake, "streams")


@pytest.mark.parametrize("crash", ["before the copy", "between copy and delete"])
async def test_crash_after_the_commit_point_is_rolled_forward(lake, records, monkeypatch, crash):
    sink = LakeSink.from_settings(lake)
    real_move = ObjectStorage.move
    calls = {"n": 0}

    def crash_on_the_second_move(self, source, target):
        # The ledger PUT went through; the first day's object is moved, then the pod dies.
        calls["n"] += 1
        if calls["n"] == 2:
            if crash == "between copy and delete":
                self.filesystem.copy_file(self.key(source), self.key(target))
            raise SystemExit("killed between two moves")
        return real_move(self, source, target)

    monkeypatch.setattr(ObjectStorage, "move", crash_on_the_second_move)
    with pytest.raises(SystemExit):
        sink.write_sync(_batch(records))
    monkeypatch.undo()

    # The ledger already says the batch is committed; only part of its days are visible.
    assert read_landed_through(lake, FEED.dataset, "tx", 0) == len(records) - 1
    visible = 2 if crash == "between copy and delete" else 1
    assert len(_objects(lake, "streams")) == visible
    assert len(_objects(lake, "_txlake/staging")) == len({r.event_timestamp.date() for r in records}) - 1

    restarted = LakeSink.from_settings(lake)
    assert await restarted.write(_batch(records)) == 0  # recovery rolled forward, the replay is skipped
    table = _visible(lake)
    assert sorted(table.column("_kafka_offset").to_pylist()) == list(range(len(records)))
    assert not _objects(lake, "_txlake/staging")


async def test_crash_before_the_commit_point_leaves_only_staged_objects(lake, records, monkeypatch):
    sink = LakeSink.from_settings(lake)
    await sink.write(_batch(records[:100]))

    def die(*_args, **_kwargs):
        raise SystemExit("killed before the ledger PUT")

    monkeypatch.setattr("app.lake.ledger._write_durably", die)
    with pytest.raises(SystemExit):
        sink.write_sync(_batch(records[100:], first_offset=100))
    monkeypatch.undo()

    staged = _objects(lake, "_txlake/staging")
    assert staged and all(path.endswith(".parquet.tmp") for path in staged), "staged objects exist"
    assert not [path for path in _objects(lake) if path.endswith(".tmp") and not path.startswith("_txlake/")]
    assert _visible(lake).num_rows == 100  # a reader listing the dataset prefix never sees them
    assert read_landed_through(lake, FEED.dataset, "tx", 0) == 99

    restarted = LakeSink.from_settings(lake.model_copy(update={"staging_grace_s": 0}))
    assert await restarted.position(FEED, 0) == 99  # recovery deleted the staged objects
    assert not _objects(lake, "_txlake/staging")
    assert await restarted.write(_batch(records[100:], first_offset=100)) == 200
    assert sorted(_visible(lake).column("_kafka_offset").to_pylist()) == list(range(300))
    assert not _objects(lake, "_txlake/staging")


async def test_partitions_have_independent_ledgers(lake, records):
    sink = LakeSink.from_settings(lake)
    await sink.write(_batch(records[:50], partition=0))
    await sink.write(_batch(records[50:80], partition=1))
    assert read_landed_through(lake, FEED.dataset, "tx", 0) == 49
    assert read_landed_through(lake, FEED.dataset, "tx", 1) == 29
    assert _visible(lake).num_rows == 80


async def test_probe_and_start_work_and_fail_against_a_missing_bucket(lake, s3_endpoint):
    sink = LakeSink.from_settings(lake)
    await sink.start()
    await sink.probe()
    assert not _objects(lake, "_txlake")  # the probe object is gone

    missing = LakeSink.from_settings(_settings(s3_endpoint, f"txlake-missing-{uuid.uuid4().hex[:8]}"))
    with pytest.raises(OSError):
        await missing.probe()
    with pytest.raises(LakeSinkError):
        await missing.start()


async def test_the_report_counts_rows_per_day_over_s3(lake, records):
    from app.ops.report import lake_rows_per_day

    assert lake_rows_per_day(lake, FEED) == []
    await LakeSink.from_settings(lake).write(_batch(records))
    rows = lake_rows_per_day(lake, FEED)
    expected: dict[tuple[int, int, int], int] = {}
    for r in records:
        day = (r.event_timestamp.year, r.event_timestamp.month, r.event_timestamp.day)
        expected[day] = expected.get(day, 0) + 1
    assert [(y, m, d, n) for y, m, d, n, _files in rows] == sorted((*day, n) for day, n in expected.items())
    assert all(files == 1 for *_day, _n, files in rows)


async def test_the_report_summarizes_transactions_over_s3(lake, records):
    from app.ops.report import _s3_transactions_summary

    assert _s3_transactions_summary(lake, FEED) is None
    await LakeSink.from_settings(lake).write(_batch(records))
    summary = _s3_transactions_summary(lake, FEED)
    assert summary is not None and "transactions" in summary
    for currency in {r.currency for r in records}:
        assert str(currency) in summary


async def test_the_worker_lands_the_streams_in_an_s3_lake(lake, deploy):
    """The real worker process with ``TXLAKE_LAKE__ROOT=s3://…``: every stream lands exactly once."""
    from datetime import UTC, datetime

    from app.ops.progress import wait_until_landed
    from models.derive import flatten
    from tests.integration.harness import produce_demo
    from tools.loadgen import generate

    now = datetime(2026, 11, 25, 11, 0, tzinfo=UTC)
    deployment = await deploy(
        TXLAKE_LAKE__ROOT=str(lake.root),
        TXLAKE_LAKE__S3_ENDPOINT_URL=lake.s3_endpoint_url,
        TXLAKE_LAKE__S3_REGION=lake.s3_region,
        TXLAKE_LAKE__S3_ACCESS_KEY_ID=lake.s3_access_key_id,
        TXLAKE_LAKE__S3_SECRET_ACCESS_KEY=lake.s3_secret_access_key.get_secret_value(),
    )
    worker = deployment.worker().start()
    await produce_demo(deployment, 1500, seed=51, now=now)
    await wait_until_landed(deployment.settings, deployment.feeds, timeout_s=120)
    assert worker.alive(), worker.log()[-3000:]
    storage = _storage(lake)
    produced = list(generate(1500, seed=51, now=now))
    for feed_name, expected in [
        ("transaction_stream", len(produced)),
        ("transaction_flattened", sum(len(flatten(tx)) for tx in produced)),
    ]:
        # The ledger (what progress reads) commits a batch before its objects are copied
        # into place; give the last copies a moment, then require the exact rows.
        for _ in range(60):
            dataset = ds.dataset(
                storage.key(deployment.feed(feed_name).dataset),
                filesystem=storage.filesystem,
                format="parquet",
                partitioning="hive",
            ).to_table()
            if dataset.num_rows >= expected:
                break
            await asyncio.sleep(0.5)
        positions = set(
            zip(dataset.column("_kafka_partition").to_pylist(), dataset.column("_kafka_offset").to_pylist(), strict=True)
        )
        assert dataset.num_rows == len(positions) == expected, feed_name
    assert not [key for key in _objects(lake, "streams") if key.endswith(".tmp")]
