"""lake.format = "delta" with the real worker: exactly once across SIGKILLs and with two workers committing to one table.

Each stream dataset is a Delta table whose log holds the Kafka offsets (app transactions); the
tests read the tables through deltalake and prove every (partition, offset) of every stream topic
is there exactly once, then run ``txlake verify``'s reconciliation over the Delta tables.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.lake.delta import app_id
from app.ops.progress import feed_progress, wait_until_landed
from app.ops.verify.deployment import verify_deployment
from models.derive import flatten
from tests.integration.harness import (
    REPO_ROOT,
    TXLAKE,
    expected_days,
    free_port,
    produce_demo,
    read_lake,
    rows_per_day,
    wait_for_progress,
)
from tools.loadgen import generate

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
# The table derivation is off: these tests are about the stream datasets' Delta tables, and the
# derivation's own load (a Faust table per worker) only slows a shared 2-core machine down.
DELTA = {"TXLAKE_LAKE__FORMAT": "delta", "TXLAKE_TABLES__DERIVE": "false"}


async def _landed_total(deployment) -> int:
    return sum(max(row.lake or 0, -1) for row in await feed_progress(deployment.settings, deployment.feeds))


async def _wait_for_progress(deployment, beyond: int, worker, timeout_s: float = 90) -> None:
    await wait_for_progress(lambda: _landed_total(deployment), beyond, worker, timeout_s)


def _commits(deployment, feed_name: str) -> list[dict]:
    """The commitInfo of every commit in the feed's Delta log (checkpointed ones are still in the JSON files)."""
    log = Path(deployment.settings.lake.root) / deployment.feed(feed_name).dataset / "_delta_log"
    infos = []
    for path in sorted(log.glob("*.json")):
        for line in path.read_text().splitlines():
            action = json.loads(line)
            if "commitInfo" in action:
                infos.append(action["commitInfo"])
    return infos


async def _assert_exactly_once(deployment, count: int, seed: int, partitions: int) -> None:
    produced = list(generate(count, seed=seed, now=NOW))
    lines = [line for tx in produced for line in flatten(tx)]
    for feed_name, records in [
        ("transaction_stream", produced),
        ("transaction_stream_anonymized", produced),
        ("transaction_flattened", lines),
    ]:
        table = read_lake(deployment, feed_name)
        positions = Counter(
            zip(table.column("_kafka_partition").to_pylist(), table.column("_kafka_offset").to_pylist(), strict=True)
        )
        twice = [position for position, n in positions.items() if n > 1]
        assert not twice, f"{feed_name}: {len(twice)} records landed twice, e.g. {twice[:5]}"
        per_partition = Counter(partition for partition, _ in positions)
        for partition in range(partitions):  # every offset of every partition, contiguous from 0
            offsets = sorted(offset for p, offset in positions if p == partition)
            assert offsets == list(range(per_partition[partition])), f"{feed_name}[{partition}]: gaps"
        assert table.num_rows == len(records), f"{feed_name}: {len(records) - table.num_rows} records missing"
        assert rows_per_day(table) == expected_days(records), feed_name
    report = await verify_deployment(deployment.settings, deployment.feeds)
    stream_reports = [feed for feed in report.feeds if feed.dataset.startswith("streams/")]
    assert stream_reports and all(feed.ok for feed in stream_reports), json.dumps(report.to_json(), default=str)[:4000]


async def test_delta_lake_stays_exactly_once_across_sigkills(deploy, warehouse_db):
    count, seed, kills = 20_000, 23, 4
    # Small batches: many commits for the kills to land between (mid-write, mid-commit, mid-checkpoint).
    deployment = await deploy(3, **DELTA, TXLAKE_BATCHING__FLUSH_SIZE="200", TXLAKE_BATCHING__ROTATE_INTERVAL_MS="200")
    rng = random.Random(14)
    producing = asyncio.create_task(produce_demo(deployment, count, seed=seed, now=NOW, rate=1000))
    worker = deployment.worker().start()
    killed = 0
    while killed < kills and not producing.done():  # kill while the load still arrives
        await _wait_for_progress(deployment, beyond=await _landed_total(deployment), worker=worker)
        await asyncio.sleep(rng.uniform(0.05, 1.5))
        worker.kill()
        killed += 1
        worker = deployment.worker().start()
    assert killed >= 2, "the load was over before two kills"
    await producing
    await wait_until_landed(deployment.settings, deployment.feeds, timeout_s=300)
    assert worker.alive(), worker.log()[-3000:]
    await _assert_exactly_once(deployment, count, seed, partitions=3)
    # The offsets live in the log only: no ledger files beside the tables.
    assert not list(Path(deployment.settings.lake.root).glob("_txlake/ledger/**/*.json"))
    commits = _commits(deployment, "transaction_stream")
    assert len({c.get("txlake.writer") for c in commits if "txlake.writer" in c}) >= killed  # every killed worker committed
    log = Path(deployment.settings.lake.root) / deployment.feed("transaction_stream").dataset / "_delta_log"
    assert list(log.glob("*.checkpoint.parquet")), "no checkpoint after hundreds of commits"


async def test_two_workers_commit_to_the_same_delta_tables_exactly_once(deploy, warehouse_db):
    count, seed = 16_000, 29
    deployment = await deploy(4, **DELTA, TXLAKE_BATCHING__FLUSH_SIZE="250", TXLAKE_BATCHING__ROTATE_INTERVAL_MS="200")
    first = deployment.worker(TXLAKE_WEB__PORT=str(free_port())).start()
    second = deployment.worker(TXLAKE_WEB__PORT=str(free_port())).start()
    await produce_demo(deployment, count, seed=seed, now=NOW, rate=4000)
    await wait_until_landed(deployment.settings, deployment.feeds, timeout_s=300)
    assert first.alive() and second.alive(), (first.log()[-2000:], second.log()[-2000:])
    await _assert_exactly_once(deployment, count, seed, partitions=4)
    # Both processes committed to each table (each owns some of the 4 partitions): concurrent appends
    # that delta-rs rebased onto each other, every partition's offset in the log.
    for feed_name in ("transaction_stream", "transaction_flattened"):
        writers = Counter(c["txlake.writer"] for c in _commits(deployment, feed_name) if "txlake.writer" in c)
        assert len(writers) == 2, (feed_name, writers)
    from deltalake import DeltaTable

    feed = deployment.feed("transaction_stream")
    table = DeltaTable(str(Path(deployment.settings.lake.root) / feed.dataset))
    ends = {row.partition: row.last_offset for row in await feed_progress(deployment.settings, deployment.feeds) if row.feed == feed.name}
    assert {p: table.transaction_version(app_id(feed.topic, p)) for p in range(4)} == ends


def _txlake(deployment, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **deployment.env}
    return subprocess.run([TXLAKE, *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


async def test_the_lake_commands_compact_vacuum_and_describe_a_delta_lake(deploy, warehouse_db):
    """``txlake lake compact|vacuum|describe|ls|files`` on Delta tables; the worker keeps landing meanwhile."""
    count, seed = 6_000, 31
    deployment = await deploy(2, **DELTA, TXLAKE_BATCHING__FLUSH_SIZE="100", TXLAKE_BATCHING__ROTATE_INTERVAL_MS="100",
                              TXLAKE_LAKE__COMPACTION__ENABLED="false")
    worker = deployment.worker().start()
    await produce_demo(deployment, count // 2, seed=seed, now=NOW, rate=3000)
    await wait_until_landed(deployment.settings, deployment.feeds, timeout_s=240)
    feed = deployment.feed("transaction_stream")
    described = json.loads(_txlake(deployment, "lake", "describe", feed.dataset, "--json").stdout)
    assert described["format"] == "delta" and described["rows"] == count // 2
    assert described["positions"] == {f"{feed.topic}[{p}]": v for p, v in _ends(await feed_progress(deployment.settings, deployment.feeds), feed).items()}
    files_before = described["file_count"]

    # Compact every day of every stream while the second half of the load lands.
    producing = asyncio.create_task(produce_demo(deployment, count // 2, seed=seed + 1, now=NOW, rate=1500))
    compacted = _txlake(deployment, "lake", "compact", "--json")
    assert compacted.returncode == 0, compacted.stdout + compacted.stderr
    results = [json.loads(line) for line in compacted.stdout.splitlines() if line.startswith("{")]
    done = [r for r in results if r["status"] == "compacted"]
    assert done and all(r["files_after"] < r["files_before"] for r in done), results
    await producing
    await wait_until_landed(deployment.settings, deployment.feeds, timeout_s=240)
    assert worker.alive(), worker.log()[-3000:]

    described = json.loads(_txlake(deployment, "lake", "describe", feed.dataset, "--json").stdout)
    assert described["compacted_days"] >= 1
    assert any("last_compaction" in p for p in described["partitions"].values())
    listed = json.loads(_txlake(deployment, "lake", "ls", "--json").stdout)
    assert {d["dataset"] for d in listed} >= {f.dataset for f in deployment.feeds if not f.is_table and f.name != "transaction_stream_blacklisted"}
    vacuumed = _txlake(deployment, "lake", "vacuum", "--json")
    assert vacuumed.returncode == 0, vacuumed.stdout + vacuumed.stderr
    files = _txlake(deployment, "lake", "files", feed.dataset).stdout.split()
    assert files and all("/_delta_log/" not in f and f.endswith(".parquet") for f in files)
    assert len(files) == json.loads(_txlake(deployment, "lake", "describe", feed.dataset, "--json").stdout)["file_count"]
    assert files_before > 0

    # Two halves produced with two seeds: every record exactly once, days intact.
    table = read_lake(deployment, "transaction_stream")
    positions = list(zip(table.column("_kafka_partition").to_pylist(), table.column("_kafka_offset").to_pylist(), strict=True))
    assert len(positions) == len(set(positions)) == count
    report = await verify_deployment(deployment.settings, deployment.feeds)
    assert all(f.ok for f in report.feeds if f.dataset.startswith("streams/")), json.dumps(report.to_json(), default=str)[:3000]


def _ends(rows, feed) -> dict[int, int]:
    return {row.partition: row.last_offset for row in rows if row.feed == feed.name}
