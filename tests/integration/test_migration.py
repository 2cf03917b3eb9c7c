"""sql/06 brings a warehouse built by the earlier DDL (tests/integration/sql_v1: PAD SPACE keys,
DECIMAL(18,x) money) to exactly what sql/02, 03, 05 and 07 build today, keeping its rows (07, a
table the earlier DDL did not have, is applied as an upgrade applies it)."""

from __future__ import annotations

import re
import uuid
from decimal import Decimal
from pathlib import Path

import aiomysql
import pymysql
import pytest

from tests.sql_scripts import SQL_DIR, WAREHOUSE_SCRIPTS, read_sql, split_sql

pytestmark = pytest.mark.integration

OLD_DDL = Path(__file__).resolve().parent / "sql_v1"
MIGRATION = "06_migrate_exact_keys_and_wide_money.sql"
NEWER = ("07_create_lake_leases.sql",)  # tables the earlier DDL did not have: an upgrade applies them too
KEY_COLUMNS = {
    ("dim_users", "user_id"), ("dim_payment_methods", "payment_method_id"),
    ("txlake_offset_ledger", "feed"), ("txlake_offset_ledger", "topic"),
    ("fact_user_transaction_summary", "user_id"), ("fact_user_transaction_summary", "transaction_type"),
    ("fact_user_transaction_summary_eur", "user_id"), ("fact_user_transaction_summary_eur", "transaction_type"),
    ("fact_payment_method_totals", "payment_method_id"), ("fact_product_purchase_counts", "product_id"),
    ("txlake_snapshot_versions", "table_name"), ("txlake_snapshot_versions", "trigger_key"),
    ("txlake_snapshot_tables", "table_name"),
    ("txlake_lake_leases", "resource"), ("txlake_lake_leases", "owner"),
}
SEED = [
    "INSERT INTO dim_users (user_id, user_name) VALUES ('a', 'Ann'), ('B', 'Bob')",
    "INSERT INTO dim_payment_methods (payment_method_id, payment_method_name) VALUES ('card', 'Card')",
    "INSERT INTO fact_user_transaction_summary (user_id, transaction_type, total_amount, transaction_count, avg_amount) "
    "VALUES ('a', 'PURCHASE', 9999999999999999.99, 3, 33333333333333.3300)",
    "INSERT INTO fact_payment_method_totals (payment_method_id, total_amount, transaction_count) VALUES ('card', -12.34, 2)",
    "INSERT INTO fact_product_purchase_counts (product_id, total_revenue, purchase_count) VALUES ('P ', 5.00, 1)",
    "INSERT INTO txlake_offset_ledger (feed, topic, kafka_partition, landed_through) VALUES ('transaction_stream', 'transactions', 0, 41)",
    "INSERT INTO txlake_snapshot_tables (table_name) VALUES ('user_transaction_summary')",
    "INSERT INTO txlake_snapshot_versions (table_name, version, status, triggered_by, trigger_key, snapshot_date, owner) "
    "VALUES ('user_transaction_summary', 1, 'complete', 'manual', 'manual:x', '2026-11-27', 'h:1')",
]
ROWS = {
    "dim_users": "SELECT user_id, user_name FROM dim_users ORDER BY user_id",
    "fact_user_transaction_summary": "SELECT user_id, transaction_type, total_amount, avg_amount FROM fact_user_transaction_summary",
    "fact_payment_method_totals": "SELECT payment_method_id, total_amount FROM fact_payment_method_totals",
    "fact_product_purchase_counts": "SELECT product_id, total_revenue FROM fact_product_purchase_counts",
    "txlake_offset_ledger": "SELECT feed, topic, kafka_partition, landed_through FROM txlake_offset_ledger",
    "txlake_snapshot_versions": "SELECT table_name, version, trigger_key FROM txlake_snapshot_versions",
}


async def _all(cursor, sql: str, args=None) -> list[tuple]:
    await cursor.execute(sql, args)
    return list(await cursor.fetchall())


async def _tables(cursor, database: str) -> dict[str, str]:
    """``SHOW CREATE TABLE`` of every base table (the AUTO_INCREMENT counter aside)."""
    names = [r[0] for r in await _all(
        cursor, "SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_type = 'BASE TABLE'",
        (database,),
    )]
    created = {}
    for name in names:
        (_, ddl), = await _all(cursor, f"SHOW CREATE TABLE `{database}`.`{name}`")
        created[name] = re.sub(r" AUTO_INCREMENT=\d+", "", ddl)
    return created


async def test_the_migration_turns_an_old_warehouse_into_todays_schema_and_keeps_its_rows(mysql_admin_dsn, warehouse_db):
    old = f"txlake_old_{uuid.uuid4().hex[:8]}"
    connection = await aiomysql.connect(**mysql_admin_dsn)
    try:
        async with connection.cursor() as cursor:
            await cursor.execute(f"CREATE DATABASE `{old}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
            await cursor.execute(f"USE `{old}`")
            for script in sorted(OLD_DDL.glob("*.sql")):
                for statement in split_sql(script.read_text()):
                    await cursor.execute(statement)
            for statement in SEED:
                await cursor.execute(statement)
            # The defects being migrated away: a PAD SPACE key merges 'a' and 'a ', money stops at 10^16.
            with pytest.raises(pymysql.err.IntegrityError):
                await cursor.execute("INSERT INTO dim_users (user_id) VALUES ('a ')")
            with pytest.raises(pymysql.err.DataError):
                await cursor.execute("UPDATE fact_payment_method_totals SET total_amount = 1e17")
            before = {table: await _all(cursor, sql) for table, sql in ROWS.items()}

            for _ in range(2):  # idempotent
                for statement in read_sql(MIGRATION):
                    await cursor.execute(statement)
                for script in NEWER:
                    for statement in read_sql(script):
                        await cursor.execute(statement)

            assert await _tables(cursor, old) == await _tables(cursor, warehouse_db.database)
            assert {table: await _all(cursor, sql) for table, sql in ROWS.items()} == before
            collations = await _all(
                cursor, "SELECT c.table_name, c.column_name, c.collation_name FROM information_schema.columns c "
                        "JOIN information_schema.tables t USING (table_schema, table_name) "
                        "WHERE c.table_schema = %s AND t.table_type = 'BASE TABLE' AND c.data_type = 'varchar' "
                        "AND c.collation_name LIKE 'utf8mb4%%bin'", (old,),
            )
            assert {(t, c) for t, c, _ in collations} == KEY_COLUMNS
            assert {collation for _, _, collation in collations} == {"utf8mb4_nopad_bin"}

            # Now byte for byte, and room for realistic totals; the foreign keys still hold and cascade.
            await cursor.execute("INSERT INTO dim_users (user_id, user_name) VALUES ('a ', 'Ann two'), ('a\t', 'Ann tab')")
            await cursor.execute(
                "INSERT INTO fact_user_transaction_summary (user_id, transaction_type, total_amount, avg_amount) "
                "VALUES ('a ', 'PURCHASE', %s, %s)",
                (Decimal("1099999999999989.00"), Decimal("999999999999.9900")),
            )
            await cursor.execute("UPDATE fact_payment_method_totals SET total_amount = %s",
                                 (Decimal("-999999999999999999999999999999999999.99"),))
            assert await _all(cursor, "SELECT u.user_name, f.total_amount FROM fact_user_transaction_summary f "
                                      "JOIN dim_users u USING (user_id) ORDER BY u.user_name") == [
                ("Ann", Decimal("9999999999999999.99")), ("Ann two", Decimal("1099999999999989.00")),
            ]
            with pytest.raises(pymysql.err.IntegrityError):
                await cursor.execute("INSERT INTO fact_user_transaction_summary (user_id, transaction_type) VALUES ('A', 'X')")
            await cursor.execute("DELETE FROM dim_users WHERE user_id = 'a '")
            assert await _all(cursor, "SELECT user_id FROM fact_user_transaction_summary") == [("a",)]
    finally:
        async with connection.cursor() as cursor:
            await cursor.execute(f"DROP DATABASE IF EXISTS `{old}`")
        connection.close()


def test_the_new_scripts_and_the_migration_name_the_same_key_collation():
    """MySQL 8 deployments replace one collation name in all of them (docs/warehouse-keys.md)."""
    for text in ((SQL_DIR / name).read_text() for name in (*WAREHOUSE_SCRIPTS, MIGRATION)):
        assert "utf8mb4_nopad_bin" in text
        assert not re.search(r"COLLATE utf8mb4_bin\b", text)
