"""SIGKILL the worker during a load, restart it, and find every event exactly once.

The worker runs with dynamic group membership here (no ``kafka.group_instance_id``): each restart
waits for the killed member's session to expire (6 s in the tests). tests/faults/test_sigkill.py
and test_recovery.py cover static membership. Each kill's resume time is recorded.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

import pytest

from app.ops.progress import feed_progress, wait_until_landed
from models.derive import flatten
from tests.faults.scenario import record_result
from tests.integration.harness import (
    expected_days,
    fetch_all,
    latest_per_key,
    naive_utc,
    produce_demo,
    read_lake,
    rows_per_day,
    wait_for_progress,
)
from tests.integration.resume import LedgerWatch
from tools.loadgen import generate

pytestmark = [pytest.mark.integration, pytest.mark.crash, pytest.mark.timeout(600)]

NOW = datetime(2026, 11, 25, 18, 30, tzinfo=UTC)
SEED = 11
COUNT = 30_000
KILLS = 4


async def _landed_total(deployment) -> int:
    rows = await feed_progress(deployment.settings, deployment.feeds)
    return sum(max(row.lake or 0, -1) + max(row.warehouse or 0, -1) for row in rows)


async def _all_landed(deployment) -> bool:
    return all(row.landed for row in await feed_progress(deployment.settings, deployment.feeds))


async def test_sigkill_during_load_lands_every_event_exactly_once(deploy, warehouse_db):
    # Small batches: many commit points for the kills to land between.
    deployment = await deploy(3, TXLAKE_BATCHING__FLUSH_SIZE="200", TXLAKE_BATCHING__ROTATE_INTERVAL_MS="200")
    rng = random.Random(2026)
    producing = asyncio.create_task(produce_demo(deployment, COUNT, seed=SEED, now=NOW, rate=4000))
    worker = deployment.worker().start()
    watch = LedgerWatch(deployment)
    resumes = []
    try:
        while len(resumes) < KILLS:
            # Kill only once this worker has landed something, then at a random moment while it
            # keeps landing: mid-batch, mid-commit, between the sinks.
            async def finished() -> bool:
                return producing.done() and await _all_landed(deployment)

            beyond = await _landed_total(deployment)
            if not await wait_for_progress(lambda: _landed_total(deployment), beyond, worker, 60, finished):
                break  # nothing left to land: a restart would have nothing to resume
            await asyncio.sleep(rng.uniform(0.05, 1.5))
            worker.kill()
            left_at = await watch.positions()
            worker = deployment.worker().start()
            resume = await watch.resume_after_restart(left_at, worker, all_landed=lambda: _all_landed(deployment))
            if resume is None:  # the killed worker had landed the rest: nothing to resume, stop killing
                break
            resumes.append(resume)
    finally:
        watch.close()
    print(f"resume after each restart: {resumes}")
    assert len(resumes) >= 2, "the load was over before two kills and restarts"
    await producing
    await wait_until_landed(deployment.settings, deployment.feeds, timeout_s=240)
    assert worker.alive(), worker.log()[-3000:]

    produced = list(generate(COUNT, seed=SEED, now=NOW))
    lines = [line for tx in produced for line in flatten(tx)]
    for feed_name, records in [
        ("transaction_stream", produced),
        ("transaction_stream_anonymized", produced),
        ("transaction_flattened", lines),
    ]:
        table = read_lake(deployment, feed_name)
        positions = list(
            zip(table.column("_kafka_partition").to_pylist(), table.column("_kafka_offset").to_pylist(), strict=True)
        )
        duplicates = len(positions) - len(set(positions))
        assert duplicates == 0, f"{feed_name}: {duplicates} records landed twice"
        assert table.num_rows == len(records), f"{feed_name}: {len(records) - table.num_rows} records missing"
        assert rows_per_day(table) == expected_days(records), feed_name
    ids = read_lake(deployment, "transaction_stream").column("transaction_id").to_pylist()
    assert sorted(ids) == sorted(tx.transaction_id for tx in produced)

    # No staged leftovers are visible to readers and none remain after recovery of a live worker.
    lake_root = deployment.settings.lake.root
    assert not list(lake_root.glob("streams/**/*.tmp"))

    users = {row[0]: row[1:] for row in await fetch_all(
        warehouse_db, "SELECT user_id, user_name, user_email, user_city, last_event_at FROM dim_users"
    )}
    expected = latest_per_key(produced, lambda tx: tx.user.id)
    assert users == {
        k: (tx.user.name, tx.user.email, tx.user.city, naive_utc(tx.event_timestamp)) for k, tx in expected.items()
    }
    ledger = await fetch_all(warehouse_db, "SELECT kafka_partition, landed_through FROM txlake_offset_ledger "
                                               "WHERE feed = 'transaction_stream'")
    assert len(ledger) == 3
    record_result(scenario="SIGKILL the worker 4 times (test_crash)", faults=KILLS,
                  resume_s=[r.wall_s for r in resumes], resume_cpu_s=[r.cpu_s for r in resumes], ok=True)
