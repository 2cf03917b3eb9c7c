"""Dimension keys are compared byte for byte: ids that a case- or accent-insensitive collation
would fold together stay different users (regression: they were merged into one row)."""

from __future__ import annotations

from datetime import UTC, datetime

import aiomysql
import pytest

from app.core.feeds import Feed
from app.core.settings import MySQLSettings
from app.core.sink import Batch
from app.warehouse.sink import WarehouseSink
from tests.integration.harness import fetch_all
from tools.loadgen import generate

pytestmark = [pytest.mark.integration, pytest.mark.fuzz]

FEED = Feed(
    name="transaction_stream", topic="transactions", record="transaction", dataset="streams/transaction_stream",
    warehouse=("dim_users", "dim_payment_methods"),
)
# Equal under utf8mb4_unicode_ci. Not here: ids that differ only by trailing spaces -- utf8mb4_bin
# is a PAD SPACE collation on MySQL and MariaDB alike, so "a" and "a " remain one key (docs/decisions/0007-utf8mb4-bin-keys.md).
FOLDED_TOGETHER = ["a", "A", "á", "ss", "ß", "x\x08", "x", "Ａ"]


async def test_ids_that_a_folding_collation_would_merge_stay_distinct(warehouse_db):
    template = next(iter(generate(1, seed=3, now=datetime(2026, 11, 26, tzinfo=UTC))))
    records = [
        template.model_copy(update={
            "user": template.user.model_copy(update={"id": key, "name": f"user {index}"}),
            "payment_method": template.payment_method.model_copy(update={"id": key}),
        })
        for index, key in enumerate(FOLDED_TOGETHER)
    ]
    db = warehouse_db
    sink = WarehouseSink(MySQLSettings(host=db.host, port=db.port, user=db.user, password=db.password, database=db.database))
    try:
        assert await sink.write(Batch(FEED, 0, 0, len(records) - 1, records, list(range(len(records))))) == len(records)
    finally:
        await sink.stop()
    users = dict(await fetch_all(warehouse_db, "SELECT user_id, user_name FROM dim_users"))
    assert users == {key: f"user {index}" for index, key in enumerate(FOLDED_TOGETHER)}
    methods = [row[0] for row in await fetch_all(warehouse_db, "SELECT payment_method_id FROM dim_payment_methods")]
    assert sorted(methods) == sorted(FOLDED_TOGETHER)


async def test_fact_keys_that_a_folding_collation_would_merge_stay_distinct(warehouse_db):
    """Regression (found by ``txlake verify`` on the fuzzed batch): product ids " " and "\\x00" were one row."""
    keys = [*FOLDED_TOGETHER, " ", "\x00"]
    connection = await aiomysql.connect(**{**warehouse_db.connect_kwargs, "autocommit": True})
    try:
        async with connection.cursor() as cursor:
            await cursor.executemany(
                "INSERT INTO fact_product_purchase_counts (product_id, purchase_count, snapshot_version) VALUES (%s, 1, 0)",
                [(key,) for key in keys],
            )
            await cursor.execute("INSERT INTO dim_users (user_id, is_inferred) VALUES ('u', TRUE)")
            await cursor.executemany(
                "INSERT INTO fact_user_transaction_summary (user_id, transaction_type, snapshot_version) VALUES ('u', %s, 0)",
                [(key,) for key in keys],
            )
    finally:
        connection.close()
    products = [row[0] for row in await fetch_all(warehouse_db, "SELECT product_id FROM fact_product_purchase_counts")]
    assert sorted(products) == sorted(keys)
    kinds = [row[0] for row in await fetch_all(warehouse_db, "SELECT transaction_type FROM fact_user_transaction_summary")]
    assert sorted(kinds) == sorted(keys)
