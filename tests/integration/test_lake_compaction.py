"""Compaction against the real services, on a local lake and on S3 (moto server).

* readers running throughout compaction see exact counts (plain globs and the catalog's view);
* a SIGKILL of ``txlake lake compact`` at every step loses and duplicates nothing (``txlake verify``);
* late events land correctly in an already compacted day;
* the workers' schedule compacts closed days, one owner per dataset-day.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from app.core.feeds import Feed
from app.core.settings import Settings
from app.core.sink import Batch
from app.lake.compaction import STEPS, active_journals, is_compacted_file, list_day_files, read_day_record
from app.lake.maintenance import maintenance_for, run_maintenance
from app.lake.sink import LakeSink
from app.lake.storage import LakeStorage, LocalStorage, ObjectStorage, open_lake_storage
from app.lake.view import stream_view, vanished
from app.ops.progress import wait_until_landed
from tests.integration.harness import TXLAKE, produce_demo
from tests.integration.test_lake_s3 import KEY_ID, REGION, SECRET, s3_endpoint  # noqa: F401 - fixture
from tests.integration.test_lake_s3 import lake as s3_lake  # noqa: F401 - fixture
from tools.loadgen import generate

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

FEED = Feed(name="transaction_stream", topic="tx", record="transaction", dataset="streams/transaction_stream")
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
COLUMNS = ["_kafka_partition", "_kafka_offset"]


def _mysql(warehouse: Any) -> dict[str, Any]:
    return {"host": warehouse.host, "port": warehouse.port, "user": warehouse.user,
            "password": warehouse.password, "database": warehouse.database}


@pytest.fixture(params=["local", "s3"])
def lake_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def settings(lake_kind: str, request: pytest.FixtureRequest, tmp_path: Path, warehouse_db: Any) -> Settings:
    lake: dict[str, Any] = {"root": str(tmp_path / "lake")}
    if lake_kind == "s3":
        lake = request.getfixturevalue("s3_lake").model_dump()
        lake["s3_secret_access_key"] = SECRET
    lake["compaction"] = {"lease_ms": 30_000}
    return Settings(mysql=_mysql(warehouse_db), lake=lake, datadir=tmp_path / "faust")


def _land(sink: LakeSink, records: list, partitions: int, batch: int, next_offset: dict[int, int]) -> None:
    for p in range(partitions):
        mine = records[p::partitions]
        for i in range(0, len(mine), batch):
            chunk = mine[i:i + batch]
            first = next_offset.get(p, 0)
            offsets = list(range(first, first + len(chunk)))
            sink.write_sync(Batch(FEED, p, offsets[0], offsets[-1], chunk, offsets))
            next_offset[p] = first + len(chunk)


def _positions(table: pa.Table) -> list[tuple[int, int]]:
    return sorted(zip(table.column("_kafka_partition").to_pylist(), table.column("_kafka_offset").to_pylist(), strict=True))


def _glob(storage: LakeStorage, dataset: str = FEED.dataset) -> pa.Table:
    """A plain glob reader: list the dataset, read every Parquet file (pyarrow, hive partitioning)."""
    if isinstance(storage, LocalStorage):
        source, filesystem = str(storage.root / dataset), None
    else:
        assert isinstance(storage, ObjectStorage)
        source, filesystem = storage.key(dataset), storage.filesystem
    return ds.dataset(source, filesystem=filesystem, format="parquet", partitioning="hive").to_table(columns=COLUMNS)


def _duckdb_glob(storage: LakeStorage) -> pa.Table:
    assert isinstance(storage, LocalStorage)
    pattern = str(storage.root / FEED.dataset / "*" / "*" / "*" / "*.parquet")
    with duckdb.connect() as connection:
        return connection.sql(
            f"SELECT _kafka_partition, _kafka_offset FROM read_parquet('{pattern}', hive_partitioning = true)"
        ).to_arrow_table()


def _duckdb_vanished(exc: BaseException) -> bool:
    """A listed file gone when read, as the other readers report it: DuckDB's own IOException (not
    an OSError), and moto's S3 server breaking off a GetObject whose object is deleted meanwhile
    (real S3 returns the whole object or 404, which :func:`vanished` knows)."""
    text = str(exc).lower()
    if isinstance(exc, duckdb.IOException):
        return "no such file" in text
    return isinstance(exc, OSError) and "getobject" in text and "failed to flush response stream" in text


class Reader(threading.Thread):
    """Reads again and again until stopped; keeps every result (or counts a vanished file)."""

    def __init__(self, name: str, read: Callable[[], tuple[list[tuple[int, int]], Any]]) -> None:
        super().__init__(name=name, daemon=True)
        self.read = read
        self.results: list[tuple[list[tuple[int, int]], Any]] = []
        self.vanished = 0
        self.error: BaseException | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.results.append(self.read())
            except Exception as exc:  # noqa: BLE001 - judged below
                if vanished(exc) or _duckdb_vanished(exc):
                    self.vanished += 1
                else:
                    self.error = exc
                    return

    def stop(self) -> None:
        self.stopping.set()
        self.join(60)
        assert self.error is None, f"{self.name}: {self.error!r}"


async def test_readers_see_exact_counts_throughout_compaction(settings: Settings, lake_kind: str) -> None:
    storage = open_lake_storage(settings.lake)
    storage.initialize()
    sink = LakeSink(storage)
    offsets: dict[int, int] = {}
    count = 6000 if lake_kind == "local" else 3000  # moto is slow: fewer, the same number of files per day
    _land(sink, list(generate(count, seed=11, now=NOW, days=3, late_fraction=0.3)), 2, count // 60, offsets)
    expected = _positions(_glob(storage))
    assert len(expected) == count and len(set(expected)) == count
    days_before = {day: len(files) for day, files in list_day_files(storage, FEED.dataset).items()}
    assert max(days_before.values()) >= 15

    def view_read() -> tuple[list[tuple[int, int]], Any]:
        view = stream_view(storage, FEED.dataset)
        return _positions(view.read(storage, COLUMNS)), view

    readers = [Reader("glob", lambda: (_positions(_glob(storage)), None)), Reader("view", view_read)]
    if lake_kind == "local":
        readers.append(Reader("duckdb", lambda: (_positions(_duckdb_glob(storage)), None)))
    for reader in readers:
        reader.start()
    # Phase 1: compaction alone. Phase 2: a second generation of every day while late events land in it.
    maintenance = maintenance_for(settings, storage)
    first = await run_maintenance(settings, maintenance, dataset=FEED.dataset)
    phase_one = {r.name: len(r.results) for r in readers}
    for reader in readers:
        if reader.name != "view":
            reader.stop()
    assert {r.status for r in first.results} == {"compacted"} and len(first.results) == len(days_before)

    def land_late() -> None:
        late = list(generate(1200, seed=12, now=NOW, days=3, late_fraction=0.5))
        _land(sink, late, 2, 40, offsets)

    writer = threading.Thread(target=land_late)
    writer.start()
    while writer.is_alive():
        await run_maintenance(settings, maintenance, dataset=FEED.dataset)
        await asyncio.sleep(0.05)
    writer.join()
    await run_maintenance(settings, maintenance, dataset=FEED.dataset)
    readers[1].stop()

    # Every read of a plain glob on a local lake: exactly the rows, never one twice, never one missing.
    # On S3 a plain glob never sees a row twice, but misses the replaced rows while objects are swapped.
    for reader in readers:
        assert len(reader.results) >= 3, (reader.name, phase_one)
        if reader.name == "view":
            continue
        for rows, _ in reader.results:
            assert len(rows) == len(set(rows)), f"{reader.name} saw a row twice"
            if lake_kind == "local":
                assert rows == expected, f"{reader.name}: {len(rows)} rows instead of {len(expected)}"
            else:
                assert set(rows) <= set(expected)
    # The catalog's view, local and S3, in both phases: exactly the rows at or below its positions.
    for rows, view in readers[1].results:
        assert rows == [(p, o) for p in sorted(view.visible_through) for o in range(view.visible_through[p] + 1)]
    for reader in readers:
        short = sum(1 for rows, _ in reader.results if len(rows) < len(expected))
        print(f"{lake_kind} {reader.name}: {len(reader.results)} reads, {reader.vanished} retried (a file vanished), "
              f"{short} saw fewer rows than landed at the start")
    final = _positions(_glob(storage))
    assert final == [(p, o) for p in sorted(offsets) for o in range(offsets[p])]
    for day, files in list_day_files(storage, FEED.dataset).items():
        assert len(files) == 1 and is_compacted_file(files[0].name), (day, files)
        record = read_day_record(storage, FEED.dataset, day)
        assert record["last"]["before"]["files"] >= 2
    assert not active_journals(storage, FEED.dataset)


# ------------------------------------------------------------------------------------- deployments


def _s3_env(lake: Any) -> dict[str, str]:
    return {
        "TXLAKE_LAKE__ROOT": lake.root,
        "TXLAKE_LAKE__S3_ENDPOINT_URL": lake.s3_endpoint_url,
        "TXLAKE_LAKE__S3_REGION": REGION,
        "TXLAKE_LAKE__S3_ACCESS_KEY_ID": KEY_ID,
        "TXLAKE_LAKE__S3_SECRET_ACCESS_KEY": SECRET,
    }


def _txlake(deployment: Any, *args: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([TXLAKE, *args], env={**deployment.workers[0].env, **env}, capture_output=True, timeout=300)


def _verify(deployment: Any) -> dict:
    done = _txlake(deployment, "verify", "--json")
    assert done.stdout, done.stderr.decode()[-3000:]
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["ok"], json.dumps(report)[:3000]
    return report


def _compact(deployment: Any, *args: str, **env: str) -> list[dict]:
    done = _txlake(deployment, "lake", "compact", *args, "--json", **env)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return [json.loads(line) for line in done.stdout.decode().splitlines() if line.startswith("{")]


@pytest.mark.parametrize("kind", ["local", "s3"])
async def test_a_sigkill_at_every_compaction_step_loses_and_duplicates_nothing(deploy, kind: str, request) -> None:
    env = _s3_env(request.getfixturevalue("s3_lake")) if kind == "s3" else {}
    # A killed compactor's lease runs out after lease_ms (the holder cannot release it): short here.
    deployment = await deploy(2, **env, TXLAKE_LAKE__COMPACTION__LEASE_MS="3000")
    worker = deployment.worker().start()
    await produce_demo(deployment, 1500, seed=21, now=NOW, days=6, late_fraction=0.2)
    await wait_until_landed(deployment.settings, deployment.feeds, timeout_s=240)
    storage = open_lake_storage(deployment.settings.lake)
    dataset = deployment.feed("transaction_stream").dataset
    days = sorted(list_day_files(storage, dataset), key=lambda d: -len(list_day_files(storage, dataset)[d]))
    assert len(days) >= len(STEPS)
    # Each of the busiest days is left by a run killed at another step; the worker keeps running.
    for step, day in zip(STEPS, days, strict=False):  # at least as many days as steps
        killed = _txlake(deployment, "lake", "compact", dataset, "--day", str(day),
                         TXLAKE_TEST_COMPACTION_KILL_AT=step)
        assert killed.returncode == -9, (step, killed.stderr.decode()[-2000:])
        interrupted = {j.day for j in active_journals(storage, dataset)}
        assert (day.path in interrupted) == (step != "staged"), step
    _verify(deployment)  # every record once, right after the kills (verify reads through the catalog's view)
    await asyncio.sleep(3.5)  # until the killed runs' leases have run out
    results = _compact(deployment)  # rolls every interrupted run forward, compacts the rest
    assert not [r for r in results if r["status"] not in ("compacted", "skipped")]
    assert not active_journals(storage, dataset)
    for day in days[:len(STEPS)]:
        names = [f.name for f in list_day_files(storage, dataset)[day]]
        assert len(names) == 1 and is_compacted_file(names[0]), (day, names)
    report = _verify(deployment)
    assert report["records_checked"] >= 1500 * 3
    worker.stop()


@pytest.mark.parametrize("kind", ["local", "s3"])
async def test_late_events_land_in_an_already_compacted_day(deploy, kind: str, request) -> None:
    env = _s3_env(request.getfixturevalue("s3_lake")) if kind == "s3" else {}
    deployment = await deploy(2, **env)
    worker = deployment.worker().start()
    await produce_demo(deployment, 1500, seed=31, now=NOW, days=3, late_fraction=0.1)
    await wait_until_landed(deployment.settings, deployment.feeds, timeout_s=180)
    results = _compact(deployment)
    compacted = {r["day"] for r in results if r["status"] == "compacted" and r["dataset"] == "streams/transaction_stream"}
    assert len(compacted) >= 3
    storage = open_lake_storage(deployment.settings.lake)
    dataset = deployment.feed("transaction_stream").dataset
    # Late events of those same days arrive after their compaction.
    late = await produce_demo(deployment, 600, seed=32, now=NOW, days=3, late_fraction=0.6)
    assert late.counts
    await wait_until_landed(deployment.settings, deployment.feeds, timeout_s=180)
    by_day = list_day_files(storage, dataset)
    grew = [d for d in by_day if str(d) in compacted and len(by_day[d]) > 1]
    assert grew, "late events should have landed as new files beside the compacted ones"
    _verify(deployment)
    table = _glob(storage, dataset)  # a plain glob, the worker idle: every row once
    assert table.num_rows == 2100 and len(set(_positions(table))) == 2100
    # The next compaction of those days merges the late files into the day's sorted file.
    _compact(deployment, dataset)
    by_day = list_day_files(storage, dataset)
    assert all(len(by_day[d]) == 1 for d in grew)
    history = read_day_record(storage, dataset, grew[0])["history"]
    assert len(history) == 2 and history[0]["before"]["files"] > 1
    _verify(deployment)
    worker.stop()


async def test_two_workers_compact_closed_days_on_their_schedule_one_owner_per_day(deploy) -> None:
    deployment = await deploy(
        2,
        TXLAKE_LAKE__COMPACTION__ENABLED="true",
        TXLAKE_LAKE__COMPACTION__CHECK_INTERVAL_MS="1000",
        TXLAKE_LAKE__COMPACTION__CLOSE_IDLE_MS="3000",
    )  # the demo days are older than the default lateness bound: closed at once, compacted while landing
    workers = [deployment.worker().start(), deployment.worker().start()]
    await produce_demo(deployment, 2000, seed=41, now=NOW, days=4, late_fraction=0.2)
    await wait_until_landed(deployment.settings, deployment.feeds, timeout_s=240)
    storage = open_lake_storage(deployment.settings.lake)
    datasets = [f.dataset for f in deployment.feeds if f.dataset.startswith("streams/")]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        pending = [
            (dataset, day) for dataset in datasets
            for day, files in list_day_files(storage, dataset).items() if len(files) > 1
        ]
        if not pending:
            break
        await asyncio.sleep(1)
    assert not pending, f"days not compacted by the schedule: {pending[:5]}"
    for dataset in datasets:
        for day in list_day_files(storage, dataset):
            record = read_day_record(storage, dataset, day) or {"history": []}  # None: the day only ever had one file
            runs = sorted((r["started_at"], r["finished_at"]) for r in record["history"])
            for (_, finished), (started, _) in zip(runs, runs[1:], strict=False):  # one owner at a time: runs never overlap
                assert finished <= started, (dataset, day, runs)
    _verify(deployment)
    logs = "".join(w.log() for w in workers)
    assert "lake compaction of" in logs
    assert not any("compaction of" in line and "failed" in line for line in logs.splitlines())
    for worker in workers:
        worker.stop()


async def test_two_compactions_at_once_share_the_days_out(settings: Settings, lake_kind: str, tmp_path: Path) -> None:
    storage = open_lake_storage(settings.lake)
    storage.initialize()
    _land(LakeSink(storage), list(generate(3000, seed=51, now=NOW, days=5, late_fraction=0.3)), 2, 100, {})
    expected = _positions(_glob(storage))
    first, second = await asyncio.gather(
        run_maintenance(settings, maintenance_for(settings, storage), dataset=FEED.dataset),
        run_maintenance(settings, maintenance_for(settings, open_lake_storage(settings.lake)), dataset=FEED.dataset),
    )
    by_day: dict[str, list[str]] = {}
    for result in first.results + second.results:
        by_day.setdefault(result.day, []).append(result.status)
    for day, statuses in by_day.items():
        assert statuses.count("compacted") == 1, (day, statuses)  # the other one was busy or found it done
    assert _positions(_glob(storage)) == expected
