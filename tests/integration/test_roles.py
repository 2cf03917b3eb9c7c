"""Worker roles: a ``--role streams`` and a ``--role tables`` process together do what one ``all`` does.

The stream side (2 partitions) and the table side (3 partitions: ``tables.partitions``) have their
own partition counts, consumer groups and sinks; between them they land all eight datasets -- the
transaction stream, the three streams and the four tables derived from it -- exactly once.
"""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from tests.integration.harness import free_port, produce_demo
from tests.integration.test_derived_streams import assert_derived_exactly_once
from tests.integration.test_tables import _wait_landed, assert_tables_match, expected_tables, landed_tables
from tools.loadgen import generate

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

NOW = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)
COUNT = 4000


async def _readiness(port: int) -> dict:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"http://127.0.0.1:{port}/readyz", timeout=5)).json()


async def test_a_streams_worker_and_a_tables_worker_land_all_eight_datasets(deploy, warehouse_db):
    deployment = await deploy(2, TXLAKE_BATCHING__ROTATE_INTERVAL_MS="300", TXLAKE_TABLES__PARTITIONS="3")
    ports = {"streams": free_port(), "tables": free_port()}
    workers = {
        role: deployment.worker("--role", role, TXLAKE_WEB__PORT=str(port)).start() for role, port in ports.items()
    }
    await produce_demo(deployment, COUNT, seed=12, now=NOW)
    await _wait_landed(deployment, timeout_s=400)
    for role, worker in workers.items():
        assert worker.alive(), f"{role}: {worker.log()[-3000:]}"

    transactions = list(generate(COUNT, seed=12, now=NOW))
    assert_tables_match(await landed_tables(warehouse_db), expected_tables(transactions))
    per_stream = await assert_derived_exactly_once(deployment)
    assert per_stream["anonymize"] == COUNT

    # Each side owns its own partitions (4 feeds x 2 stream partitions, 4 feeds x 3 table partitions)
    # and runs only its sinks.
    streams, tables = await _readiness(ports["streams"]), await _readiness(ports["tables"])
    assert streams["checks"]["partitions"] == "8 assigned", streams
    assert tables["checks"]["partitions"] == "12 assigned", tables
    assert {"lake", "warehouse", "deltas", "derived_streams"} <= set(streams["checks"]) and "facts" not in streams["checks"]
    assert "facts" in tables["checks"] and not {"lake", "derived_streams", "deltas"} & set(tables["checks"])
    agent = "table agent: assigned deltas partitions"  # the table agent runs on the table side only
    assert agent in workers["tables"].log() and agent not in workers["streams"].log()
    assert "land_transaction_stream" not in workers["tables"].log()
