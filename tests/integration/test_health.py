"""Probes and metrics of a running worker, scraped over HTTP like Kubernetes and Prometheus do."""

from __future__ import annotations

import asyncio
import json
import subprocess
from datetime import UTC, datetime

import httpx
import pytest

from app.ops.progress import wait_until_landed
from tests.integration.harness import REPO_ROOT, produce_demo

pytestmark = [pytest.mark.integration, pytest.mark.serial, pytest.mark.timeout(240)]

NOW = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)


async def _get(client: httpx.AsyncClient, deployment, path: str) -> httpx.Response:
    return await client.get(f"http://127.0.0.1:{deployment.settings.web.port}{path}", timeout=5)


async def _until(predicate, timeout_s: float = 60):
    for _ in range(int(timeout_s / 0.5)):
        result = await predicate()
        if result:
            return result
        await asyncio.sleep(0.5)
    raise AssertionError(f"condition not met in {timeout_s}s")


def _samples(text: str, name: str) -> dict[str, float]:
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, value = line.rsplit(" ", 1)
            found[key] = float(value)
    return found


async def test_probes_and_metrics_of_a_running_worker(deploy):
    deployment = await deploy(TXLAKE_HEALTH__LAG_INTERVAL_S="1")
    worker = deployment.worker().start()
    await produce_demo(deployment, 1500, seed=31, now=NOW)
    await wait_until_landed(deployment.settings, deployment.feeds, timeout_s=120)

    async with httpx.AsyncClient() as client:

        async def ready():
            response = await _get(client, deployment, "/readyz")
            return response if response.status_code == 200 else None

        response = await _until(ready)
        checks = response.json()["checks"]
        # One check per sink (lake, warehouse, facts; deltas while deriving) and Kafka.
        assert {"lake", "warehouse", "facts"} <= checks.keys()
        assert all(checks[name] == "ok" for name in ("kafka", "lake", "warehouse", "facts"))
        assert checks["partitions"] == "16 assigned"  # 8 feeds (4 streams, 4 tables) × 2 partitions

        live = await _get(client, deployment, "/livez")
        assert live.status_code == 200 and live.json()["status"] == "ok"

        async def lag_settled():
            text = (await _get(client, deployment, "/metrics")).text
            lag = _samples(text, "txlake_consumer_lag_records")
            return text if len(lag) == 16 and not any(lag.values()) else None

        metrics = await _until(lag_settled)
        landed = _samples(metrics, "txlake_records_landed_total")
        transactions_topic = deployment.feed("transaction_stream").name
        assert landed[f'txlake_records_landed_total{{feed="{transactions_topic}",sink="lake"}}'] == 1500
        assert landed[f'txlake_records_landed_total{{feed="{transactions_topic}",sink="warehouse"}}'] == 1500
        assert _samples(metrics, "txlake_sink_flush_seconds_count")
        assert _samples(metrics, "txlake_ledger_landed_through_offset")
        assert any(line.startswith("faust_") for line in metrics.splitlines()), "Faust's own sensors"

        # MySQL goes away: not ready (and says why) once no batch landed in it for a while (a batch
        # that just landed proves MySQL answered), still alive; back: ready again.
        subprocess.run(["bash", str(REPO_ROOT / "scripts/infra/mariadb.sh"), "stop"], check=True, capture_output=True)

        async def mysql_sinks_failed():
            response = await _get(client, deployment, "/readyz")
            checks = response.json()["checks"]
            failed = all(checks[sink].startswith("failed") for sink in ("warehouse", "facts"))
            return response if failed else None

        not_ready = await _until(mysql_sinks_failed, timeout_s=30)
        assert not_ready.status_code == 503
        assert (await _get(client, deployment, "/livez")).status_code == 200
        subprocess.run(["bash", str(REPO_ROOT / "scripts/infra/mariadb.sh"), "start"], check=True, capture_output=True)
        await _until(ready)

    # The worker logs JSON lines with Kafka coordinates where they apply.
    worker.stop()
    lines = [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
    assert lines and all({"ts", "level", "logger", "message"} <= line.keys() for line in lines)
    assert "txlake-local" not in worker.log(), "a secret was logged"
