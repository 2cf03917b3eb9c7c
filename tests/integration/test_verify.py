"""``txlake verify`` against a real deployment: clean, then with the lake and warehouse tampered with."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime

import aiomysql
import pytest
from aiokafka import AIOKafkaProducer

from app.ops.progress import wait_until_landed
from app.ops.verify.deployment import verify_deployment
from tests.integration.harness import TXLAKE, fetch_all, produce_demo

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _run_verify(deployment) -> tuple[int, dict]:
    done = subprocess.run([TXLAKE, "verify", "--json"], env={**deployment.workers[0].env}, capture_output=True, timeout=120)
    assert done.stdout, done.stderr.decode()[-3000:]
    return done.returncode, json.loads(done.stdout)


def _partition(report: dict, feed: str, partition: int) -> dict:
    entry = next(f for f in report["feeds"] if f["feed"] == feed)
    return next(p for p in entry["partitions"] if p["partition"] == partition)


async def test_verify_finds_nothing_wrong_then_every_kind_of_tampering(deploy, warehouse_db):
    deployment = await deploy(2)
    worker = deployment.worker().start()
    await produce_demo(deployment, 3000, seed=5, now=NOW)
    producer = AIOKafkaProducer(bootstrap_servers=deployment.settings.kafka.bootstrap_servers)
    await producer.start()
    try:  # two dead letters on partition 0 of the transactions topic
        for value in (b"\xff\xfe not utf-8", b'{"not": "a transaction"}'):
            await producer.send_and_wait(deployment.feed("transaction_stream").topic, value, partition=0)
    finally:
        await producer.stop()
    await wait_until_landed(deployment.settings, deployment.feeds, timeout_s=120)
    worker.stop()

    code, report = _run_verify(deployment)
    assert code == 0, report
    assert report["ok"] and report["records_checked"] > 3000 * 3
    dead = _partition(report, "transaction_stream", 0)
    assert dead["in_dead_letters"] == 2 and not dead["missing"]

    # Tamper: a lake file disappears, another one is copied (a duplicate), a user row is deleted.
    root = deployment.settings.lake.root
    files = sorted((root / deployment.feed("transaction_flattened").dataset).rglob("*.parquet"))
    removed = files[0]
    removed.unlink()
    copied = sorted((root / deployment.feed("transaction_stream_anonymized").dataset).rglob("*.parquet"))[0]
    shutil.copy(copied, copied.with_name("copy-" + copied.name))
    (user,) = (await fetch_all(warehouse_db, "SELECT user_id FROM dim_users ORDER BY user_id LIMIT 1"))[0]
    connection = await aiomysql.connect(**warehouse_db.connect_kwargs)
    try:
        async with connection.cursor() as cursor:
            await cursor.execute("DELETE FROM dim_users WHERE user_id = %s", (user,))
        await connection.commit()
    finally:
        connection.close()

    code, report = _run_verify(deployment)
    assert code == 1 and not report["ok"]
    flattened = next(f for f in report["feeds"] if f["feed"] == "transaction_flattened")
    assert any(p["missing"] for p in flattened["partitions"])
    anonymized = next(f for f in report["feeds"] if f["feed"] == "transaction_stream_anonymized")
    assert any(p["duplicated"] for p in anonymized["partitions"])
    transactions = next(f for f in report["feeds"] if f["feed"] == "transaction_stream")
    assert transactions["partitions"][0]["missing_dimension_keys"]["dim_users"] == [user]

    # The same in-process, and the text output names the ranges.
    in_process = await verify_deployment(deployment.settings, deployment.feeds)
    assert not in_process.ok
    text = subprocess.run([TXLAKE, "verify"], env={**deployment.workers[0].env}, capture_output=True, text=True).stdout
    assert "MISSING" in text and "DUPLICATED" in text and "FAILED" in text
