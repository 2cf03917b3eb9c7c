"""The warehouse schema (sql/02, sql/03) and sample queries (sql/04) against the real MariaDB.

The fact tables' business columns, their types, the natural keys and the foreign keys are those of
the one description of each table, :data:`models.tables.TABLES`.

Each test gets a fresh database from the ``warehouse_db`` fixture; statements run as the
least-privileged application user unless a test says otherwise.
"""

from __future__ import annotations

import re
from datetime import date

import aiomysql
import pymysql
import pytest

from models.tables import TABLES, TableSpec
from tests.integration.conftest import SQL_DIR, WAREHOUSE_SCRIPTS, read_sql

pytestmark = pytest.mark.integration

USER_FACTS = ("fact_user_transaction_summary", "fact_user_transaction_summary_eur")
ALL_TABLES = {
    "dim_users",
    "dim_payment_methods",
    "txlake_offset_ledger",
    "fact_user_transaction_summary",
    "fact_user_transaction_summary_eur",
    "fact_payment_method_totals",
    "fact_product_purchase_counts",
    "txlake_snapshot_versions",
    "txlake_snapshot_tables",
    "txlake_lake_leases",
}

# 4-byte UTF-8 (emoji, CJK extension B) next to BMP CJK and Latin accents.
UNICODE_NAME = "Zoë 李小龙 🚀🍣 𠜎𠜱"


async def _fetchall(conn, sql, args=None):
    async with conn.cursor() as cur:
        await cur.execute(sql, args)
        return await cur.fetchall()


async def _execute(conn, sql, args=None):
    async with conn.cursor() as cur:
        await cur.execute(sql, args)
        return cur.rowcount


async def _seed_users(conn, *user_ids):
    for uid in user_ids:
        await _execute(
            conn,
            "INSERT INTO dim_users (user_id, user_name, user_country, user_city, last_event_at) "
            "VALUES (%s, %s, 'FR', 'Lyon', '2026-01-01 00:00:00.000001')",
            (uid, f"name {uid}"),
        )
        for version in (0, 1):
            await _execute(
                conn,
                "INSERT INTO fact_user_transaction_summary (user_id, transaction_type, total_amount, "
                "transaction_count, avg_amount, snapshot_date, snapshot_version) "
                "VALUES (%s, 'purchase', 100.50, 3, 33.5000, %s, %s)",
                (uid, date(2026, 1, 1), version),
            )
            await _execute(
                conn,
                "INSERT INTO fact_user_transaction_summary_eur (user_id, transaction_type, total_amount_eur, "
                "transaction_count, avg_amount_eur, exchange_rate, snapshot_date, snapshot_version) "
                "VALUES (%s, 'purchase', 92.46, 3, 30.8200, 0.92000000, %s, %s)",
                (uid, date(2026, 1, 1), version),
            )


async def _count(conn, table, column, value):
    rows = await _fetchall(conn, f"SELECT COUNT(*) FROM {table} WHERE {column} = %s", (value,))
    return rows[0][0]


def test_scripts_02_to_04_do_not_name_a_database():
    for name in (*WAREHOUSE_SCRIPTS, "04_sample_queries.sql"):
        for statement in read_sql(name):
            assert not re.match(r"(?i)\s*use\s", statement), f"{name}: {statement[:60]}"
            assert not re.search(r"(?i)\btxlake\s*\.", statement), f"{name} names a database"


@pytest.mark.filterwarnings("ignore:Table .* already exists")
async def test_schema_tables_engine_charset_and_idempotent(warehouse_db, mysql_admin_dsn):
    conn = await aiomysql.connect(**mysql_admin_dsn)
    try:
        await _execute(conn, f"USE `{warehouse_db.database}`")
        for script in WAREHOUSE_SCRIPTS:  # re-applying must be a no-op
            for statement in read_sql(script):
                await _execute(conn, statement)
        rows = await _fetchall(
            conn,
            "SELECT table_name, engine, table_collation FROM information_schema.tables "
            "WHERE table_schema = %s AND table_type = 'BASE TABLE'",
            (warehouse_db.database,),
        )
        assert {r[0] for r in rows} == ALL_TABLES
        for table, engine, collation in rows:
            assert engine == "InnoDB", table
            assert collation.startswith("utf8mb4"), (table, collation)
        fks = await _fetchall(
            conn,
            "SELECT table_name, referenced_table_name, delete_rule "
            "FROM information_schema.referential_constraints WHERE constraint_schema = %s",
            (warehouse_db.database,),
        )
        assert sorted(fks) == sorted(
            (spec.fact_table, spec.dimension.table, "CASCADE") for spec in TABLES.values() if spec.dimension is not None
        ) == [
            ("fact_payment_method_totals", "dim_payment_methods", "CASCADE"),
            ("fact_user_transaction_summary", "dim_users", "CASCADE"),
            ("fact_user_transaction_summary_eur", "dim_users", "CASCADE"),
        ]
    finally:
        await conn.ensure_closed()


# A fact table's columns around its business columns: the surrogate id first, then these.
BOOKKEEPING = ("snapshot_date", "snapshot_version", "updated_at")


def _declared_type(data_type: str, length: int | None, precision: int | None, scale: int | None) -> str:
    """information_schema's description of a column, written as the SQL of models.columns.SqlType."""
    if data_type == "varchar":
        return f"VARCHAR({length})"
    if data_type == "decimal":
        return f"DECIMAL({precision},{scale})"
    return data_type.upper()


@pytest.mark.parametrize("spec", TABLES.values(), ids=TABLES.keys())
async def test_the_fact_table_declares_the_columns_of_its_spec(warehouse_conn, warehouse_db, spec: TableSpec):
    """sql/03 against models/tables.py: names and order, types, nullability, key collation, natural key, foreign key."""
    (table_collation,) = (await _fetchall(
        warehouse_conn, "SELECT table_collation FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
        (warehouse_db.database, spec.fact_table),
    ))[0]
    rows = await _fetchall(
        warehouse_conn,
        "SELECT column_name, data_type, character_maximum_length, numeric_precision, numeric_scale, is_nullable, "
        "collation_name, extra FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
        "ORDER BY ordinal_position",
        (warehouse_db.database, spec.fact_table),
    )
    surrogate, *business = rows[: -len(BOOKKEEPING)]
    assert surrogate[7] == "auto_increment" and tuple(r[0] for r in rows[-len(BOOKKEEPING):]) == BOOKKEEPING
    assert [r[0] for r in business] == [c.name for c in spec.fact_columns]
    for column, (name, data_type, length, precision, scale, nullable, collation, _) in zip(spec.fact_columns, business, strict=True):
        assert _declared_type(data_type, length, precision, scale) == column.type.sql, name
        assert (nullable == "YES") is column.nullable, name
        if data_type == "varchar":
            assert collation == (column.type.collation or table_collation), name

    index = await _fetchall(
        warehouse_conn,
        "SELECT index_name, column_name FROM information_schema.statistics WHERE table_schema = %s AND table_name = %s "
        "AND non_unique = 0 AND index_name <> 'PRIMARY' ORDER BY index_name, seq_in_index",
        (warehouse_db.database, spec.fact_table),
    )
    assert [column for _, column in index] == [*spec.key_columns, "snapshot_version"]
    references = await _fetchall(
        warehouse_conn,
        "SELECT column_name, referenced_table_name, referenced_column_name FROM information_schema.key_column_usage "
        "WHERE table_schema = %s AND table_name = %s AND referenced_table_name IS NOT NULL",
        (warehouse_db.database, spec.fact_table),
    )
    assert list(references) == ([(spec.dimension.column, spec.dimension.table, spec.dimension.column)] if spec.dimension else [])


async def test_every_sample_query_runs_as_app_user(warehouse_conn):
    statements = read_sql("04_sample_queries.sql")
    assert 6 <= len(statements) <= 10
    text = (SQL_DIR / "04_sample_queries.sql").read_text(encoding="utf-8")
    assert text.count("\n-- ") >= len(statements), "each query needs a comment line above it"
    for statement in statements:  # empty schema
        await _fetchall(warehouse_conn, statement)
    await _seed_users(warehouse_conn, "u1", "u2")
    await _execute(
        warehouse_conn,
        "INSERT INTO dim_payment_methods (payment_method_id, payment_method_name, payment_method_category) "
        "VALUES ('pm1', 'Card', 'card')",
    )
    await _execute(
        warehouse_conn,
        "INSERT INTO fact_payment_method_totals (payment_method_id, payment_method_name, total_amount, "
        "transaction_count, avg_amount) VALUES ('pm1', 'Card', 10.00, 2, 5.0000)",
    )
    await _execute(
        warehouse_conn,
        "INSERT INTO txlake_offset_ledger (feed, topic, kafka_partition, landed_through) "
        "VALUES ('warehouse', 'user_transaction_summary', 0, 41)",
    )
    await warehouse_conn.commit()
    for statement in statements:  # with data
        await _fetchall(warehouse_conn, statement)
    # Query 1 (top users by spend) sees the live rows only.
    top = await _fetchall(warehouse_conn, statements[0])
    assert {r[0] for r in top} == {"u1", "u2"}


async def test_deleting_a_user_cascades_to_both_user_fact_tables(warehouse_conn):
    await _seed_users(warehouse_conn, "u1", "u2")
    await warehouse_conn.commit()
    for table in USER_FACTS:
        assert await _count(warehouse_conn, table, "user_id", "u1") == 2

    assert await _execute(warehouse_conn, "DELETE FROM dim_users WHERE user_id = 'u1'") == 1
    await warehouse_conn.commit()

    for table in USER_FACTS:
        assert await _count(warehouse_conn, table, "user_id", "u1") == 0
        assert await _count(warehouse_conn, table, "user_id", "u2") == 2


async def test_deleting_a_payment_method_cascades_to_its_totals(warehouse_conn):
    for pm in ("pm1", "pm2"):
        await _execute(
            warehouse_conn,
            "INSERT INTO dim_payment_methods (payment_method_id, payment_method_name) VALUES (%s, %s)",
            (pm, pm.upper()),
        )
        for version in (0, 1, 2):
            await _execute(
                warehouse_conn,
                "INSERT INTO fact_payment_method_totals (payment_method_id, total_amount, "
                "transaction_count, avg_amount, snapshot_version) VALUES (%s, 1.00, 1, 1.0000, %s)",
                (pm, version),
            )
    await warehouse_conn.commit()

    assert await _execute(warehouse_conn, "DELETE FROM dim_payment_methods WHERE payment_method_id = 'pm1'") == 1
    await warehouse_conn.commit()

    assert await _count(warehouse_conn, "fact_payment_method_totals", "payment_method_id", "pm1") == 0
    assert await _count(warehouse_conn, "fact_payment_method_totals", "payment_method_id", "pm2") == 3


async def test_foreign_keys_and_natural_keys_are_enforced(warehouse_conn):
    with pytest.raises(pymysql.err.IntegrityError) as missing_parent:
        await _execute(
            warehouse_conn,
            "INSERT INTO fact_user_transaction_summary (user_id, transaction_type) VALUES ('ghost', 'purchase')",
        )
    assert missing_parent.value.args[0] == 1452
    await warehouse_conn.rollback()

    await _seed_users(warehouse_conn, "u1")
    with pytest.raises(pymysql.err.IntegrityError) as duplicate:
        await _execute(
            warehouse_conn,
            "INSERT INTO fact_user_transaction_summary (user_id, transaction_type, snapshot_version) "
            "VALUES ('u1', 'purchase', 0)",
        )
    assert duplicate.value.args[0] == 1062
    # The natural key is what the sinks upsert on.
    await _execute(
        warehouse_conn,
        "INSERT INTO fact_user_transaction_summary (user_id, transaction_type, total_amount, snapshot_version) "
        "VALUES ('u1', 'purchase', 7.25, 0) ON DUPLICATE KEY UPDATE total_amount = VALUES(total_amount)",
    )
    rows = await _fetchall(
        warehouse_conn,
        "SELECT total_amount FROM fact_user_transaction_summary WHERE user_id = 'u1' AND snapshot_version = 0",
    )
    assert [str(r[0]) for r in rows] == ["7.25"]
    await warehouse_conn.rollback()


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE TABLE intruder (id INT PRIMARY KEY)",
        "DROP TABLE dim_users",
        "DROP TABLE fact_product_purchase_counts",
        "ALTER TABLE dim_users ADD COLUMN x INT",
        "TRUNCATE TABLE txlake_offset_ledger",
        "CREATE DATABASE txlake_intruder",
    ],
)
async def test_app_user_cannot_change_the_schema(warehouse_conn, statement):
    with pytest.raises(pymysql.err.MySQLError) as denied:
        await _execute(warehouse_conn, statement)
    # 1142 table access denied, 1044 database access denied
    assert denied.value.args[0] in (1142, 1044), denied.value.args
    tables = await _fetchall(warehouse_conn, "SHOW FULL TABLES WHERE Table_type = 'BASE TABLE'")
    assert {r[0] for r in tables} == ALL_TABLES


async def test_four_byte_unicode_round_trips(warehouse_conn):
    await _execute(
        warehouse_conn,
        "INSERT INTO dim_users (user_id, user_name, user_email, user_country, user_city) "
        "VALUES (%s, %s, %s, %s, %s)",
        ("u-🚀", UNICODE_NAME, "zoë@例子.测试", "中国", "北京 🏯"),
    )
    await _execute(
        warehouse_conn,
        "INSERT INTO dim_payment_methods (payment_method_id, payment_method_name, payment_method_category) "
        "VALUES (%s, %s, %s)",
        ("pm-💳", "支付宝 💳", "wallet 👛"),
    )
    await _execute(
        warehouse_conn,
        "INSERT INTO fact_payment_method_totals (payment_method_id, payment_method_name) VALUES (%s, %s)",
        ("pm-💳", "支付宝 💳"),
    )
    await _execute(
        warehouse_conn,
        "INSERT INTO fact_product_purchase_counts (product_id, product_name, product_category) "
        "VALUES (%s, %s, %s)",
        ("p-🍣", "寿司セット 🍣 𠜎", "食品 🍱"),
    )
    await warehouse_conn.commit()

    assert await _fetchall(
        warehouse_conn, "SELECT user_id, user_name, user_email, user_country, user_city FROM dim_users"
    ) == (("u-🚀", UNICODE_NAME, "zoë@例子.测试", "中国", "北京 🏯"),)
    assert await _fetchall(
        warehouse_conn, "SELECT payment_method_name, payment_method_category FROM dim_payment_methods"
    ) == (("支付宝 💳", "wallet 👛"),)
    assert await _fetchall(
        warehouse_conn,
        "SELECT t.payment_method_name FROM fact_payment_method_totals t "
        "JOIN dim_payment_methods p USING (payment_method_id) WHERE p.payment_method_id = %s",
        ("pm-💳",),
    ) == (("支付宝 💳",),)
    assert await _fetchall(
        warehouse_conn, "SELECT product_id, product_name, product_category FROM fact_product_purchase_counts"
    ) == (("p-🍣", "寿司セット 🍣 𠜎", "食品 🍱"),)
