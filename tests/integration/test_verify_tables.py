"""``txlake verify`` on the table feeds: clean after the real worker derived and landed the four tables, then
every kind of tampering with the live fact rows is reported (and the exit code says so)."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime

import aiomysql
import pytest
from aiokafka import AIOKafkaProducer

from app.ops.progress import wait_until_landed
from tests.integration.harness import TXLAKE, fetch_all, produce_demo

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

NOW = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)
TABLE_FEEDS = ("user_transaction_summary", "user_transaction_summary_eur", "payment_method_totals", "product_purchase_counts")


def _run_verify(deployment, *flags: str) -> tuple[int, dict]:
    done = subprocess.run(
        [TXLAKE, "verify", "--json", *flags], env={**deployment.workers[0].env}, capture_output=True, timeout=180
    )
    assert done.stdout, done.stderr.decode()[-3000:]
    return done.returncode, json.loads(done.stdout)


def _feed(report: dict, name: str) -> dict:
    return next(f for f in report["feeds"] if f["feed"] == name)


async def _execute(warehouse, *statements: tuple[str, tuple]) -> None:
    connection = await aiomysql.connect(**{**warehouse.connect_kwargs, "autocommit": True})
    try:
        async with connection.cursor() as cursor:
            for sql, args in statements:
                await cursor.execute(sql, args)
    finally:
        connection.close()


async def test_verify_reconciles_the_tables_then_reports_each_tampering(deploy, warehouse_db):
    deployment = await deploy(2, TXLAKE_BATCHING__ROTATE_INTERVAL_MS="300")
    await produce_demo(deployment, 4000, seed=17, now=NOW)
    products = deployment.feed("product_purchase_counts").topic
    producer = AIOKafkaProducer(bootstrap_servers=deployment.settings.kafka.bootstrap_servers)
    await producer.start()
    try:  # bad input on a changelog: both end in the dead-letter topic, which verify accounts for
        await producer.send_and_wait(products, b'{"PURCHASE_COUNT": "many"}', key=b"P-BAD", partition=0)
        await producer.send_and_wait(products, None, key=b"P-NEVER-HELD", partition=0)
    finally:
        await producer.stop()
    worker = deployment.worker().start()
    for _ in range(2):  # the first pass can see the table topics before the table agent wrote its last changes
        await wait_until_landed(deployment.settings, deployment.feeds, timeout_s=240)
    assert worker.alive(), worker.log()[-3000:]
    worker.stop()

    code, report = _run_verify(deployment, "--settled")
    assert code == 0, json.dumps([_feed(report, name) for name in TABLE_FEEDS])[:4000]
    for name in TABLE_FEEDS:
        feed = _feed(report, name)
        assert feed["not_checked"] is None and feed["ok"]
        assert feed["live_state"]["expected_keys"] == feed["live_state"]["live_rows"] > 0
        assert sum(p["checked"] for p in feed["partitions"]) >= feed["live_state"]["expected_keys"]
    assert sum(p["in_dead_letters"] for p in _feed(report, "product_purchase_counts")["partitions"]) == 2
    assert report["elapsed_s"] < 30

    # Tamper: one live row deleted, one measure changed, one extra key (also without its dimension row).
    (user, kind), = await fetch_all(
        warehouse_db, "SELECT user_id, transaction_type FROM fact_user_transaction_summary "
                      "WHERE snapshot_version = 0 ORDER BY user_id, transaction_type LIMIT 1")
    (method,), = await fetch_all(
        warehouse_db, "SELECT payment_method_id FROM fact_payment_method_totals WHERE snapshot_version = 0 "
                      "ORDER BY payment_method_id LIMIT 1")
    await _execute(
        warehouse_db,
        ("DELETE FROM fact_user_transaction_summary WHERE user_id = %s AND transaction_type = %s AND snapshot_version = 0",
         (user, kind)),
        ("UPDATE fact_payment_method_totals SET total_amount = total_amount + 0.01 "
         "WHERE payment_method_id = %s AND snapshot_version = 0", (method,)),
        ("INSERT INTO fact_product_purchase_counts (product_id, purchase_count, total_revenue, unique_buyers, "
         "snapshot_version) VALUES ('P-EXTRA', 1, 1.00, 1, 0)", ()),
        ("SET SESSION foreign_key_checks = 0", ()),
        ("INSERT INTO fact_user_transaction_summary_eur (user_id, transaction_type, total_amount_eur, "
         "transaction_count, snapshot_version) VALUES ('U-ORPHAN', 'PURCHASE', 5.00, 1, 0)", ()),
    )

    code, report = _run_verify(deployment, "--settled")
    assert code == 1 and not report["ok"]
    summary = _feed(report, "user_transaction_summary")["live_state"]
    assert (summary["missing_count"], summary["missing"]) == (1, [[user, kind]])
    assert summary["extra_count"] == summary["differing_count"] == 0
    totals = _feed(report, "payment_method_totals")["live_state"]
    assert totals["differing_count"] == 1 and totals["differing"][0]["key"] == [method]
    assert totals["differing"][0]["column"] == "total_amount"
    counts = _feed(report, "product_purchase_counts")["live_state"]
    assert (counts["extra_count"], counts["extra"]) == (1, [["P-EXTRA"]])
    eur = _feed(report, "user_transaction_summary_eur")["live_state"]
    assert eur["extra"] == [["U-ORPHAN", "PURCHASE"]] and eur["missing_dimension_keys"] == {"dim_users": ["U-ORPHAN"]}
    for name in TABLE_FEEDS:  # the changelog positions themselves are still fine
        assert all(p["ok"] for p in _feed(report, name)["partitions"])

    text = subprocess.run([TXLAKE, "verify"], env={**deployment.workers[0].env}, capture_output=True, text=True)
    assert text.returncode == 1
    assert "MISSING from MySQL: 1 keys" in text.stdout and "DIFFERING measures: 1" in text.stdout
    assert "NOT in the changelog: 1 keys: P-EXTRA" in text.stdout and "FAILED" in text.stdout


async def test_a_settled_check_reports_changes_not_landed(deploy, warehouse_db):
    """Without a worker nothing lands: lag for the default check, a finding for a settled one."""
    deployment = await deploy(1, TXLAKE_TABLES__DERIVE="false")
    topic = deployment.feed("payment_method_totals").topic
    producer = AIOKafkaProducer(bootstrap_servers=deployment.settings.kafka.bootstrap_servers)
    await producer.start()
    try:
        for n in range(3):
            await producer.send_and_wait(topic, b'{"TOTAL_AMOUNT": %d, "TRANSACTION_COUNT": 1}' % n, key=b"PM-1")
    finally:
        await producer.stop()
    deployment.worker()  # its environment only: verify runs as the worker would be configured

    code, report = _run_verify(deployment)
    totals = _feed(report, "payment_method_totals")
    assert totals["ok"] and totals["partitions"][0]["warehouse_landed_through"] == -1
    code, report = _run_verify(deployment, "--settled")
    totals = _feed(report, "payment_method_totals")
    assert code == 1 and totals["partitions"][0]["missing"] == [[0, 2]]
