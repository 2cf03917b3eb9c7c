"""Large aggregates through the real worker, Kafka and MariaDB (issue 11, item 2).

1,100 valid transactions of 999,999,999,999.99 for one user used to push the user's total past the
table value model's bound: the worker dead-lettered its own changelog records, the fact kept an old
value, ``txlake progress`` said landed and ``txlake verify --settled`` said nothing. Now money is sized
end to end (models/money.py), txlake never dead-letters what it derived (a record or a value that
still cannot be stored holds its partition, loudly), and verify reports a fact older than the last
value of its changelog key.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from decimal import Decimal

import aiomysql
import pyarrow.dataset as ds
import pytest

from models.tables import DERIVED_HEADER
from tests.integration.harness import TXLAKE, fetch_all
from tests.integration.worker_checks import (
    dead_letter_offsets,
    feed_report,
    metric_value,
    produce_raw,
    produce_transactions,
    run_verify,
    wait_landed,
    wait_until,
)
from tools.loadgen import generate

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
BIG = 999_999_999_999.99
HELD = "txlake_partition_held"


def big_transactions(count: int, user: str = "U-BIG"):
    """``count`` completed USD purchases of ``BIG`` by one user, one product line of the same price."""
    template = next(generate(1, seed=21, now=NOW))
    line = template.products[0].model_copy(update={"id": "P-BIG", "price": BIG, "quantity": 1})
    for n in range(count):
        yield template.model_copy(update={
            "transaction_id": f"T-BIG-{n}", "amount": BIG, "currency": "USD", "status": "COMPLETED",
            "transaction_type": "PURCHASE", "products": [line],
            "user": template.user.model_copy(update={"id": user}),
            "payment_method": template.payment_method.model_copy(update={"id": "PM-BIG"}),
        })


async def _live(warehouse, sql: str) -> list[tuple]:
    return await fetch_all(warehouse, sql + " WHERE snapshot_version = 0")


async def test_the_issue_load_lands_to_the_cent_with_no_dead_letter_and_verifies(deploy, warehouse_db, tmp_path):
    deployment = await deploy(2, TXLAKE_BATCHING__ROTATE_INTERVAL_MS="300")
    await produce_transactions(deployment, big_transactions(1100))
    worker = deployment.worker().start()
    await wait_landed(deployment)
    assert worker.alive(), worker.log()[-3000:]

    total, eur = Decimal("1099999999999989.00"), Decimal("1011999999999989.88")  # 1,100 x BIG, x 0.92
    assert await _live(warehouse_db, "SELECT user_id, total_amount, transaction_count, avg_amount "
                                     "FROM fact_user_transaction_summary") == [("U-BIG", total, 1100, Decimal("999999999999.9900"))]
    assert await _live(warehouse_db, "SELECT total_amount_eur, transaction_count, avg_amount_eur, exchange_rate "
                                     "FROM fact_user_transaction_summary_eur") == [
        (eur, 1100, Decimal("919999999999.9908"), Decimal("0.92000000"))]
    assert await _live(warehouse_db, "SELECT total_amount FROM fact_payment_method_totals") == [(eur,)]
    assert await _live(warehouse_db, "SELECT purchase_count, total_revenue, avg_price, unique_buyers "
                                     "FROM fact_product_purchase_counts") == [(1100, total, Decimal("999999999999.9900"), 1)]
    assert await dead_letter_offsets(deployment) == {}
    assert await metric_value(deployment, "txlake_partition_holds_total", feed="user_transaction_summary",
                              reason="own_record_invalid") is None

    # A snapshot version holds the same figures, in the lake (decimal128(38, 2)) and the warehouse.
    taken = subprocess.run([TXLAKE, "snapshot", "take", "user_transaction_summary", "--json"],
                           env=worker.env, capture_output=True, text=True, timeout=120)
    assert taken.returncode == 0, taken.stderr[-2000:]
    (version,) = json.loads(taken.stdout)
    lake = ds.dataset(f"{deployment.settings.lake.root}/{version['lake_path']}", format="parquet").to_table()
    assert str(lake.schema.field("total_amount").type) == "decimal128(38, 2)"
    assert lake.column("total_amount").to_pylist() == [total]
    assert await fetch_all(warehouse_db, "SELECT total_amount FROM fact_user_transaction_summary "
                                         f"WHERE snapshot_version = {version['version']}") == [(total,)]

    worker.stop()
    code, report = run_verify(deployment, "--settled")
    assert code == 0, [f for f in report["feeds"] if not f["ok"]]


async def test_a_value_the_warehouse_cannot_store_holds_the_partition_until_the_schema_admits_it(
    deploy, warehouse_db, mysql_admin_dsn
):
    """An old, narrow fact column refuses the total: the partition waits (metric, ERROR log), nothing is
    dead-lettered or skipped; once the column is migrated the same batch lands."""
    await _alter(mysql_admin_dsn, warehouse_db, "MODIFY total_amount DECIMAL(12,2) NULL")  # holds < 10^10
    deployment = await deploy(1, TXLAKE_BATCHING__ROTATE_INTERVAL_MS="300")
    await produce_transactions(deployment, big_transactions(20))
    worker = deployment.worker().start()
    await wait_until(
        lambda: metric_value(deployment, HELD, feed="user_transaction_summary", partition="0"),
        "the held partition's gauge", log=worker.log,
    )
    assert await metric_value(deployment, "txlake_partition_holds_total", feed="user_transaction_summary",
                              reason="value_not_storable") == 1
    assert "HOLDING user_transaction_summary partition 0" in worker.log()
    assert "Out of range value for column 'total_amount'" in worker.log()
    # The other tables land meanwhile; nothing went to the dead-letter topic.
    await wait_until(lambda: _live(warehouse_db, "SELECT total_amount_eur FROM fact_user_transaction_summary_eur"),
                     "the EUR table", log=worker.log)
    assert await _live(warehouse_db, "SELECT * FROM fact_user_transaction_summary") == []
    assert await dead_letter_offsets(deployment) == {}
    code, report = run_verify(deployment, "--settled")
    assert code == 1 and feed_report(report, "user_transaction_summary")["partitions"][0]["missing"]

    await _alter(mysql_admin_dsn, warehouse_db, "MODIFY total_amount DECIMAL(38,2) NULL")
    await wait_landed(deployment)
    assert await _live(warehouse_db, "SELECT total_amount, transaction_count FROM fact_user_transaction_summary") == [
        (Decimal("19999999999999.80"), 20)]
    assert await metric_value(deployment, HELD, feed="user_transaction_summary", partition="0") == 0
    assert "released user_transaction_summary partition 0" in worker.log()
    assert worker.alive(), worker.log()[-3000:]
    worker.stop()
    code, report = run_verify(deployment, "--settled")
    assert code == 0, [f for f in report["feeds"] if not f["ok"]]


async def test_an_own_record_that_does_not_decode_holds_and_a_foreign_one_is_dead_lettered(deploy, warehouse_db):
    deployment = await deploy(1, TXLAKE_BATCHING__ROTATE_INTERVAL_MS="300")
    topic = deployment.feed("user_transaction_summary").topic
    key = json.dumps({"USER_ID": "U-1", "TRANSACTION_TYPE": "PURCHASE"}).encode()
    own = [(DERIVED_HEADER, b"1")]
    await produce_raw(deployment, topic, [
        (key, b'{"TOTAL_AMOUNT": 12.50, "TRANSACTION_COUNT": 1, "AVG_AMOUNT": 12.5}', own),  # 0: lands
        (key, b'{"TOTAL_AMOUNT": "garbage", "TRANSACTION_COUNT": 1}', ()),  # 1: someone else's: dead-lettered
    ])
    worker = deployment.worker().start()
    await wait_landed(deployment)
    assert await dead_letter_offsets(deployment) == {(topic, 0): [1]}

    await produce_raw(deployment, topic, [(key, b'{"TOTAL_AMOUNT": 1e40, "TRANSACTION_COUNT": 2}', own)])  # 2: held
    await wait_until(lambda: metric_value(deployment, HELD, feed="user_transaction_summary", partition="0"),
                     "the held partition's gauge", log=worker.log)
    assert "own_record_invalid" in worker.log() and "TOTAL_AMOUNT: 1E+40 does not fit DECIMAL(38,2)" in worker.log()
    assert await dead_letter_offsets(deployment) == {(topic, 0): [1]}  # the own record is not there
    assert await _live(warehouse_db, "SELECT total_amount FROM fact_user_transaction_summary") == [(Decimal("12.50"),)]
    assert worker.alive(), worker.log()[-3000:]
    worker.stop()

    # verify: offset 2 has not landed, and the live fact is older than its key's last change.
    code, report = run_verify(deployment, "--settled")
    summary = feed_report(report, "user_transaction_summary")
    assert code == 1 and summary["partitions"][0]["missing"] == [[2, 2]]
    assert summary["live_state"]["stale"] == [{"key": ["U-1", "PURCHASE"], "offset": 2, "why": "not landed"}]


async def test_in_ksqldb_mode_garbage_is_dead_lettered_and_verify_reports_the_stale_fact(deploy, warehouse_db):
    """The issue's blind spot: the last change of a key is in the dead-letter topic, the fact keeps the
    value before it, and a check that only replays what the sink should hold finds nothing."""
    deployment = await deploy(1, TXLAKE_TABLES__DERIVE="false")
    topic = deployment.feed("payment_method_totals").topic
    await produce_raw(deployment, topic, [
        (b"PM-1", b'{"TOTAL_AMOUNT": 100.25, "TRANSACTION_COUNT": 1}', ()),
        (b"PM-1", b'{"TOTAL_AMOUNT": 1e40, "TRANSACTION_COUNT": 2}', ()),  # beyond DECIMAL(38, 2): not storable
        (b"PM-2", b'{"TOTAL_AMOUNT": 5, "TRANSACTION_COUNT": 1}', ()),
    ])
    worker = deployment.worker().start()
    await wait_landed(deployment)
    assert await dead_letter_offsets(deployment) == {(topic, 0): [1]}
    assert sorted(await _live(warehouse_db, "SELECT payment_method_id, total_amount FROM fact_payment_method_totals")) == [
        ("PM-1", Decimal("100.25")), ("PM-2", Decimal("5.00"))]
    worker.stop()

    code, report = run_verify(deployment, "--settled")
    totals = feed_report(report, "payment_method_totals")
    assert code == 1 and totals["partitions"][0]["ok"]  # every offset landed or dead-lettered...
    live = totals["live_state"]
    assert (live["stale_count"], live["stale"]) == (1, [{"key": ["PM-1"], "offset": 1, "why": "dead-lettered"}])
    assert live["differing_count"] == live["missing_count"] == live["extra_count"] == 0
    text = subprocess.run([TXLAKE, "verify", "--settled"], env=worker.env, capture_output=True, text=True, timeout=300)
    assert text.returncode == 1 and "STALE facts" in text.stdout and "PM-1 (last change at offset 1 dead-lettered)" in text.stdout


async def _alter(admin_dsn, warehouse, change: str) -> None:
    connection = await aiomysql.connect(**admin_dsn)
    try:
        async with connection.cursor() as cursor:
            await cursor.execute(f"ALTER TABLE `{warehouse.database}`.fact_user_transaction_summary {change}")
    finally:
        connection.close()
