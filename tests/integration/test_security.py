"""Hardening against a running worker: request size limits, no unauthenticated state pages, secrets never logged, no DDL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import aiomysql
import httpx
import pymysql
import pytest

from app.ops.progress import wait_until_landed
from tests.integration.harness import produce_demo

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SECRETS = {
    "TXLAKE_ANONYMIZATION__KEY": "hmac-never-logged-81f",
    "TXLAKE_KAFKA__SASL_PASSWORD": "sasl-never-logged-3c7",  # PLAINTEXT here: set, unused, still secret
    "TXLAKE_LAKE__S3_SECRET_ACCESS_KEY": "s3-never-logged-a90",
}


async def _chunks():
    for _ in range(3):
        yield b"x" * 1000


async def _ready(port: int) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(150):
            try:
                if (await client.get(f"http://127.0.0.1:{port}/livez")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError("the worker's web server never answered")


async def test_worker_limits_request_bodies_and_never_logs_secrets(deploy, warehouse_db):
    deployment = await deploy(1, TXLAKE_LOG_LEVEL="DEBUG", **SECRETS)
    worker = deployment.worker().start()
    await produce_demo(deployment, 500, seed=9, now=datetime(2026, 11, 26, tzinfo=UTC))
    await wait_until_landed(deployment.settings, deployment.feeds, timeout_s=120)
    port = deployment.settings.web.port
    await _ready(port)
    async with httpx.AsyncClient() as client:
        url = f"http://127.0.0.1:{port}"
        assert (await client.post(f"{url}/livez", content=b"x" * 70_000)).status_code == 413
        streamed = await client.post(f"{url}/livez", content=_chunks())  # chunked: no length
        assert streamed.status_code == 411
        assert (await client.get(f"{url}/livez")).status_code == 200
        # Faust's table and router pages would serve the derived tables' state without a token.
        for page in ("/table/", "/table/product_purchase_counts/P-001/", "/router/"):
            assert (await client.get(f"{url}{page}")).status_code == 404, page
        metrics = (await client.get(f"{url}/metrics")).text
    assert worker.alive()
    worker.stop()
    log = worker.log()
    assert "DEBUG" in log or '"level": "DEBUG"' in log
    for text in (log, metrics):
        for secret in (*SECRETS.values(), warehouse_db.password):
            assert secret not in text


async def test_the_application_user_cannot_change_the_schema(warehouse_db):
    connection = await aiomysql.connect(**warehouse_db.connect_kwargs)
    try:
        async with connection.cursor() as cursor:
            for ddl in (
                "CREATE TABLE evil (id INT)",
                "DROP TABLE dim_users",
                "ALTER TABLE dim_users ADD COLUMN x INT",
                "LOCK TABLES dim_users WRITE",
                "CREATE DATABASE evil",
            ):
                with pytest.raises(pymysql.err.OperationalError) as denied:
                    await cursor.execute(ddl)
                assert denied.value.args[0] in (1044, 1142), ddl  # access denied
            await cursor.execute("SELECT COUNT(*) FROM dim_users")  # DML is what it has
    finally:
        connection.close()
