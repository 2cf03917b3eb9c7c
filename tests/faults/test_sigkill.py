"""SIGKILL the worker at 10 random moments of a 200,000-message load; every record lands exactly once.

The worker runs as a static group member (``kafka.group_instance_id``, as the chart sets it from
the pod name), so each restart takes the partitions back without waiting for the killed
member's session. Each kill's resume time (seconds from the restarted worker's process start
until a ledger moves again) is recorded with the result; docs/recovery.md shows them.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from tests.faults.scenario import finish, landed_total, start_load, wait_for_progress
from tests.integration.resume import LedgerWatch

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.crash, pytest.mark.timeout(900)]

KILLS = 10
INSTANCE_ID = "txlake-0"  # one pod, restarted in place


async def test_ten_sigkills_under_load_lose_and_duplicate_nothing(deploy):
    deployment = await deploy(4, TXLAKE_BATCHING__FLUSH_SIZE="1000", TXLAKE_BATCHING__ROTATE_INTERVAL_MS="300")
    rng = random.Random(6)
    # A slower, longer load (~85 s) so that all ten kills and restarts happen while it still runs.
    load = await start_load(deployment, seed=61, rate=650)
    worker = deployment.worker(TXLAKE_KAFKA__GROUP_INSTANCE_ID=INSTANCE_ID).start()
    watch = LedgerWatch(deployment)
    resumes = []
    try:
        for _ in range(KILLS):
            # Only once this incarnation landed something, then at a random moment of its landing:
            # mid-batch, between the stage and the commit point, between the sinks, mid-commit to Kafka.
            await wait_for_progress(deployment, worker, beyond=await landed_total(deployment))
            await asyncio.sleep(rng.uniform(0.0, 2.0))
            worker.kill()
            left_at = await watch.positions()
            worker = deployment.worker(TXLAKE_KAFKA__GROUP_INSTANCE_ID=INSTANCE_ID).start()
            resumes.append(await watch.resume_after_restart(left_at, worker))
    finally:
        watch.close()
    print(f"resume after each restart: {resumes}")
    await finish(
        deployment, load, "SIGKILL the worker at 10 random moments", KILLS,
        resume_s=[r.wall_s for r in resumes], resume_cpu_s=[r.cpu_s for r in resumes],
    )
    assert worker.alive(), worker.log()[-3000:]
