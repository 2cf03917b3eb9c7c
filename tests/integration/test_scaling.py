"""Scaling by partition count: two workers split 4-partition topics, one leaves, still exactly once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import pytest

from app.ops.progress import wait_until_landed
from tests.integration.harness import (
    fetch_all,
    free_port,
    latest_per_key,
    produce_demo,
    read_lake,
)
from tests.integration.test_tables import assert_tables_match, expected_tables, landed_tables
from tools.loadgen import generate

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
COUNT = 12_000


async def _assigned(port: int) -> int | None:
    try:
        async with httpx.AsyncClient() as client:
            body = (await client.get(f"http://127.0.0.1:{port}/readyz", timeout=5)).json()
    except (httpx.HTTPError, ValueError):
        return None
    text = body["checks"]["partitions"]
    return int(text.split()[0]) if text[0].isdigit() else 0


async def test_two_workers_split_the_partitions_and_one_takes_over(deploy, warehouse_db):
    deployment = await deploy(4, TXLAKE_HEALTH__LAG_INTERVAL_S="1")
    ports = [free_port(), free_port()]
    first = deployment.worker(TXLAKE_WEB__PORT=str(ports[0])).start()
    second = deployment.worker(TXLAKE_WEB__PORT=str(ports[1])).start()
    producing = asyncio.create_task(produce_demo(deployment, COUNT, seed=41, now=NOW, rate=3000))

    # 8 feeds (4 streams, 4 tables) × 4 partitions = 32, split between the two members of the group.
    for _ in range(120):
        counts = [await _assigned(port) for port in ports]
        if None not in counts and sum(counts) == 32 and min(counts) > 0:
            break
        await asyncio.sleep(0.5)
    assert None not in counts and sum(counts) == 32 and min(counts) > 0, counts

    await asyncio.sleep(1.5)
    first.stop()  # a scale-down: SIGTERM, its partitions move to the other worker
    for _ in range(120):
        if await _assigned(ports[1]) == 32:
            break
        await asyncio.sleep(0.5)
    assert await _assigned(ports[1]) == 32

    await producing
    await wait_until_landed(deployment.settings, deployment.feeds, timeout_s=180)
    assert second.alive(), second.log()[-3000:]

    produced = list(generate(COUNT, seed=41, now=NOW))
    table = read_lake(deployment, "transaction_stream")
    positions = list(zip(table.column("_kafka_partition").to_pylist(), table.column("_kafka_offset").to_pylist(), strict=True))
    assert len(positions) == len(set(positions)) == COUNT
    assert sorted(table.column("transaction_id").to_pylist()) == sorted(tx.transaction_id for tx in produced)
    users = dict(await fetch_all(warehouse_db, "SELECT user_id, user_city FROM dim_users"))
    assert users == {k: tx.user.city for k, tx in latest_per_key(produced, lambda tx: tx.user.id).items()}
    # The tables, derived by two workers then one (their Faust table partitions moved with the deltas
    # partitions), equal what one computation over every transaction gives.
    await wait_until_landed(deployment.settings, deployment.feeds, timeout_s=60)
    assert_tables_match(await landed_tables(warehouse_db), expected_tables(produced))
