"""The Kafka broker restarts mid-load (its data kept): the worker reconnects by itself, nothing lost."""

from __future__ import annotations

import asyncio

import pytest

from tests.faults.scenario import (
    TRANSACTIONS,
    RssProbe,
    finish,
    infra,
    start_load,
    wait_for_progress,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(900)]


async def test_kafka_broker_restart_mid_load(deploy):
    deployment = await deploy(4)
    # The first half is produced at full speed, so the worker is mid-drain when the broker goes;
    # the producer of the second half starts after the broker is back (the load generator
    # itself is not the system under test).
    first = await start_load(deployment, seed=63, count=TRANSACTIONS // 2, rate=None)
    worker = deployment.worker().start()
    await first
    await wait_for_progress(deployment, worker, beyond=10_000)
    rss = RssProbe(worker.process.pid).start()
    infra("kafka", "stop")
    try:
        await asyncio.sleep(5)
        assert worker.alive(), worker.log()[-3000:]
    finally:
        infra("kafka", "start")
    second = await start_load(deployment, seed=64, count=TRANSACTIONS - TRANSACTIONS // 2)
    await finish(deployment, _both(first, second), "restart the Kafka broker mid-load", 1, rss)
    assert worker.alive() and len(deployment.workers) == 1, worker.log()[-3000:]


def _both(first: asyncio.Task, second: asyncio.Task) -> asyncio.Task:
    async def merged():
        a, b = await first, await second
        return type(a)(counts={k: a.counts[k] + b.counts[k] for k in a.counts}, elapsed_s=a.elapsed_s + b.elapsed_s)

    return asyncio.ensure_future(merged())
