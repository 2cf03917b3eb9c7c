"""Another session holds ``LOCK TABLES … WRITE`` on the warehouse tables past the batch window."""

from __future__ import annotations

import asyncio

import aiomysql
import httpx
import pytest

from app.ops.progress import feed_progress
from tests.faults.scenario import RssProbe, finish, metric, start_load, wait_for_progress

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(900)]

LOCK_S = 20  # 40 batch windows (rotate interval 500 ms)


async def test_warehouse_tables_locked_past_the_batch_window(deploy, warehouse_db, mysql_admin_dsn):
    deployment = await deploy(4, TXLAKE_MYSQL__LOCK_WAIT_TIMEOUT_S="5")
    worker = deployment.worker().start()
    load = await start_load(deployment, seed=66)
    await wait_for_progress(deployment, worker, beyond=20_000)
    rss = RssProbe(worker.process.pid).start()
    # root: the application user has no LOCK TABLES privilege (least privilege), a DBA or a backup job does.
    locker = await aiomysql.connect(**mysql_admin_dsn, db=warehouse_db.database)
    try:
        async with locker.cursor() as cursor:
            await cursor.execute("LOCK TABLES dim_users WRITE, dim_payment_methods WRITE, txlake_offset_ledger WRITE")
        # (Nothing here may read the warehouse while it is locked: it would wait like the worker.)
        before = await lake_landed(deployment)
        await asyncio.sleep(LOCK_S)
        # The warehouse writes timed out on the lock and were retried with backoff; the
        # lake-only feeds kept landing meanwhile.
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://127.0.0.1:{deployment.settings.web.port}/metrics")).text
        assert metric(metrics, "txlake_sink_retries_total", sink="warehouse") > 0
        assert "Lock wait timeout exceeded" in worker.log()
        assert await lake_landed(deployment) > before
        assert worker.alive(), worker.log()[-3000:]
        async with locker.cursor() as cursor:
            await cursor.execute("UNLOCK TABLES")
    finally:
        locker.close()
    await finish(deployment, load, "LOCK TABLES … WRITE on the warehouse past the batch window", 1, rss)
    assert worker.alive() and len(deployment.workers) == 1, worker.log()[-3000:]


async def lake_landed(deployment) -> int:
    # Table feeds land only in MySQL (their ledger is locked too): reading their progress would wait.
    lake_only = tuple(feed for feed in deployment.feeds if not feed.warehouse and not feed.is_table)
    return sum(row.lake + 1 for row in await feed_progress(deployment.settings, lake_only))
