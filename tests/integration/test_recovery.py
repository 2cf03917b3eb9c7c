"""SIGKILL the worker under load and restart it (as Kubernetes restarts a container in its pod).

With static group membership the restarted worker, under the same ``kafka.group_instance_id``,
takes its partitions back without waiting for the killed member's session to expire, and the
stream fetcher does not wait for Faust's table recovery. So landing resumes well before the
session timeout (90 s here, the longest Faust accepts -- not the harness's 6 s), ``/readyz``
answers 200 while the restarted worker lands, every record still lands exactly once
(``txlake verify``), and a graceful stop leaves both consumer groups at once. The resume times
are recorded with the fault suite's results (docs/recovery.md shows them); the test holds them
only to the session timeout, the wait that static membership removes. (A long session keeps that
bound far from the start-up time of a worker on a loaded machine, which reached 30-40 s on the
shared 2-core test machine; a restart that waited for the killed member could not beat it.)
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from app.ops.progress import wait_until_landed
from tests.faults.scenario import problems, record_result, run_verify
from tests.integration.harness import Deployment, WorkerProcess, produce_demo
from tests.integration.resume import LedgerWatch

pytestmark = [pytest.mark.integration, pytest.mark.crash, pytest.mark.serial, pytest.mark.timeout(900)]

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
KILLS = 3
SESSION_TIMEOUT_S = 90  # the longest kafka.session_timeout_ms; the default is 30 s
INSTANCE_ID = "txlake-0"  # the pod name, which the chart passes as TXLAKE_KAFKA__GROUP_INSTANCE_ID
RATE = 200  # transactions/s (~730 messages/s): well within what the worker and the table derivation take
READY_WATCH_S = 4.0  # how long /readyz is sampled while the restarted worker lands
PROBE_TIMEOUT_S = 6  # the chart's readinessProbe.timeoutSeconds


async def test_sigkill_restart_resumes_landing_and_is_ready_while_landing(deploy):
    deployment = await deploy(
        4,
        TXLAKE_KAFKA__SESSION_TIMEOUT_MS=str(SESSION_TIMEOUT_S * 1000),
        TXLAKE_KAFKA__HEARTBEAT_INTERVAL_MS="3000",
        TXLAKE_KAFKA__GROUP_INSTANCE_ID=INSTANCE_ID,
        # The stream path is what this test restarts; the table derivation has its own SIGKILL
        # test (test_tables.py) and would only slow the drain at the end.
        TXLAKE_TABLES__DERIVE="false",
    )
    rng = random.Random(4)
    stop_load = asyncio.Event()
    load = asyncio.create_task(steady_load(deployment, stop_load))
    watch = LedgerWatch(deployment)
    resumes, readies = [], []
    try:
        worker = deployment.worker().start()
        async with httpx.AsyncClient(timeout=PROBE_TIMEOUT_S) as client:
            for _ in range(KILLS):
                # This incarnation lands, then dies at a random moment of its landing.
                await watch.wait_until_moved(await watch.positions(), worker, timeout_s=120)
                await asyncio.sleep(rng.uniform(0.2, 1.5))
                worker.kill()
                left_at = await watch.positions()
                worker = deployment.worker().start()  # same pod, same instance id
                resumes.append(await watch.resume_after_restart(left_at, worker))
                readies.append(round(await ready_while_landing(client, deployment, worker, watch), 1))
                print(f"kill {len(resumes)}: landing resumed {resumes[-1].wall_s} s after the restart "
                      f"({resumes[-1].cpu_s} CPU-s), /readyz 200 after {readies[-1]} s", flush=True)
        stop_load.set()
        messages = await load
        await wait_until_landed(deployment.settings, deployment.feeds, timeout_s=300)
    finally:
        stop_load.set()
        watch.close()
    assert worker.alive(), worker.log()[-3000:]
    # A graceful stop leaves both groups at once, static member or not: its partitions would
    # otherwise wait a session timeout for a pod that never comes back under its name.
    assert worker.stop() == 0, worker.log()[-3000:]
    for group in (deployment.settings.kafka.group_id, deployment.settings.faust_app_id):
        assert await group_members(deployment, group) == [], f"{group} still has the stopped worker"
    report = run_verify(deployment)
    record_result(
        scenario="SIGKILL the worker, restart it with the same instance id (test_recovery)",
        faults=KILLS,
        messages=messages,
        session_timeout_s=SESSION_TIMEOUT_S,
        resume_s=[r.wall_s for r in resumes],
        resume_cpu_s=[r.cpu_s for r in resumes],
        ready_s=readies,
        ok=report["ok"],
    )
    print(f"resume after each restart: {resumes}; /readyz 200 after (s): {readies}")
    assert report["exit_code"] == 0 and report["ok"], "\n".join(problems(report))
    # Without static membership the restarted worker could not land before the killed member's
    # session expired: at least the session timeout after the kill.
    assert max(r.wall_s for r in resumes) < SESSION_TIMEOUT_S, resumes


async def group_members(deployment: Deployment, group: str) -> list:
    """The members of a consumer group, as the broker describes it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=deployment.settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([group])
        (described,) = response.to_object()["groups"]
        return described["members"]
    finally:
        await admin.close()


async def steady_load(deployment: Deployment, stop: asyncio.Event) -> int:
    """Produce :data:`RATE` transactions/s in 2-second chunks until ``stop``; the messages produced."""
    messages, chunk = 0, 0
    while not stop.is_set():
        chunk += 1
        report = await produce_demo(deployment, 2 * RATE, seed=4100 + chunk, now=NOW, rate=RATE)
        messages += sum(report.counts.values())
    return messages


async def ready_while_landing(
    client: httpx.AsyncClient, deployment: Deployment, worker: WorkerProcess, watch: LedgerWatch
) -> float:
    """Wait for ``/readyz`` 200, then require 200 on every sample while the ledgers keep moving.

    Returns the seconds from the worker's process start to its first 200.
    """
    url = f"http://127.0.0.1:{deployment.settings.web.port}/readyz"
    assert worker.started_at is not None
    deadline = time.monotonic() + 60
    last = None
    while time.monotonic() < deadline:
        try:
            last = await client.get(url)
        except httpx.HTTPError:
            last = None  # the web server starts with the worker
        if last is not None and last.status_code == 200:
            break
        assert worker.alive(), worker.log()[-3000:]
        await asyncio.sleep(0.2)
    else:
        raise AssertionError(f"/readyz never 200 while landing: {last and last.text}")
    ready_s = time.monotonic() - worker.started_at
    before = await watch.positions()
    watched_until = time.monotonic() + READY_WATCH_S
    while time.monotonic() < watched_until:
        response = await client.get(url)
        assert response.status_code == 200, f"/readyz {response.status_code} while landing: {response.text}"
        await asyncio.sleep(0.25)
    await watch.wait_until_moved(before, worker, timeout_s=30)  # it was landing meanwhile
    return ready_s
