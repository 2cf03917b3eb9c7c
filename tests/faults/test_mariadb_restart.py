"""MariaDB restarts mid-load: the worker retries with backoff, stays up, keeps its memory bounded."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.faults.scenario import RssProbe, finish, infra, metric, start_load, wait_for_progress

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(900)]


async def test_mariadb_restart_mid_load(deploy):
    deployment = await deploy(4)
    worker = deployment.worker().start()
    load = await start_load(deployment, seed=62)
    await wait_for_progress(deployment, worker, beyond=20_000)
    rss = RssProbe(worker.process.pid).start()
    infra("mariadb", "stop")
    try:
        await asyncio.sleep(8)  # the load keeps coming while the warehouse is gone
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://127.0.0.1:{deployment.settings.web.port}/metrics")).text
        assert metric(metrics, "txlake_sink_retries_total", sink="warehouse") > 0
        assert worker.alive(), worker.log()[-3000:]
    finally:
        infra("mariadb", "start")
    await finish(deployment, load, "restart MariaDB mid-load", 1, rss)
    assert worker.alive() and len(deployment.workers) == 1, worker.log()[-3000:]
