"""A sink outage is retried with backoff, never skipped: MariaDB stops and restarts under load."""

from __future__ import annotations

import asyncio
import subprocess
from datetime import UTC, datetime

import httpx
import pytest

from app.ops.progress import feed_progress, wait_until_landed
from tests.integration.harness import (
    REPO_ROOT,
    fetch_all,
    latest_per_key,
    produce_demo,
    read_lake,
)
from tools.loadgen import generate

pytestmark = [pytest.mark.integration, pytest.mark.serial, pytest.mark.timeout(300)]

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def _mariadb(action: str) -> None:
    subprocess.run(["bash", str(REPO_ROOT / "scripts/infra/mariadb.sh"), action], check=True, capture_output=True)


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_mariadb_restart_mid_load_is_retried_and_nothing_is_lost(deploy, warehouse_db):
    deployment = await deploy()
    worker = deployment.worker().start()
    first = await produce_demo(deployment, 2000, seed=21, now=NOW)
    await wait_until_landed(deployment.settings, deployment.feeds, timeout_s=120)

    _mariadb("stop")
    try:
        await produce_demo(deployment, 2000, seed=22, now=NOW)
        # Feeds without warehouse tables keep landing; the transaction feed's partitions wait
        # (both sinks must land a batch before the next one is taken) and retry.
        await asyncio.wait_for(_lake_only_feeds_landed(deployment), timeout=60)
        port = deployment.settings.web.port
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        assert _metric(metrics, "txlake_sink_retries_total", sink="warehouse") > 0
        assert worker.alive()
    finally:
        _mariadb("start")

    await wait_until_landed(deployment.settings, deployment.feeds, timeout_s=120)
    assert worker.alive(), worker.log()[-3000:]
    produced = list(generate(2000, seed=21, now=NOW)) + list(generate(2000, seed=22, now=NOW))
    table = read_lake(deployment, "transaction_stream")
    assert table.num_rows == 4000
    assert sorted(table.column("transaction_id").to_pylist()) == sorted(tx.transaction_id for tx in produced)
    users = dict(await fetch_all(warehouse_db, "SELECT user_id, user_city FROM dim_users"))
    assert users == {k: tx.user.city for k, tx in latest_per_key(produced, lambda tx: tx.user.id).items()}
    assert first.counts


async def _lake_only_feeds_landed(deployment):
    lake_only = tuple(feed for feed in deployment.feeds if not feed.warehouse and not feed.is_table)
    while not all(row.landed for row in await feed_progress(deployment.settings, lake_only)):
        await asyncio.sleep(0.5)
