"""The warehouse sink against the real MariaDB: ledger, idempotence, latest-event-wins, inferred rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import aiomysql
import pytest

from app.core.errors import WarehouseSinkError
from app.core.feeds import Feed
from app.core.settings import MySQLSettings
from app.core.sink import Batch
from app.warehouse.sink import WarehouseSink
from tests.integration.harness import fetch_all
from tools.loadgen import generate

pytestmark = pytest.mark.integration

FEED = Feed(
    name="transaction_stream",
    topic="tx",
    record="transaction",
    dataset="streams/transaction_stream",
    warehouse=("dim_users", "dim_payment_methods"),
)
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _settings(db) -> MySQLSettings:
    return MySQLSettings(host=db.host, port=db.port, user=db.user, password=db.password, database=db.database)


def _batch(records, first_offset=0, partition=0) -> Batch:
    offsets = list(range(first_offset, first_offset + len(records)))
    return Batch(FEED, partition, offsets[0], offsets[-1], records, offsets)


@pytest.fixture
async def sink(warehouse_db):
    sink = WarehouseSink(_settings(warehouse_db))
    await sink.start()
    yield sink
    await sink.stop()


def _moved(tx, city: str, at: datetime):
    return tx.model_copy(update={"user": tx.user.model_copy(update={"city": city}), "event_timestamp": at})


async def test_rows_and_ledger_commit_together_and_replays_change_nothing(sink, warehouse_db):
    records = list(generate(400, seed=5, now=NOW, users=50))
    assert await sink.write(_batch(records[:250])) == 250
    assert await sink.position(FEED, 0) == 249
    before = await fetch_all(warehouse_db, "SELECT * FROM dim_users ORDER BY user_id")
    assert await sink.write(_batch(records[:250])) == 0
    assert await fetch_all(warehouse_db, "SELECT * FROM dim_users ORDER BY user_id") == before
    assert await sink.write(_batch(records[200:], first_offset=200)) == 150  # 200..249 were held
    assert await sink.position(FEED, 0) == 399
    assert await sink.position(FEED, 1) == -1


async def test_the_latest_event_wins_by_event_time_not_arrival(sink, warehouse_db):
    tx = next(iter(generate(1, seed=9, now=NOW)))
    t0 = datetime(2026, 11, 20, 10, tzinfo=UTC)
    newest = _moved(tx, "Newest", t0 + timedelta(hours=2))
    late = _moved(tx, "Late", t0)
    middle = _moved(tx, "Middle", t0 + timedelta(hours=1))
    # Within one batch the newest wins whatever the order ...
    await sink.write(_batch([middle, newest, late]))
    rows = await fetch_all(warehouse_db, f"SELECT user_city, last_event_at FROM dim_users WHERE user_id = '{tx.user.id}'")
    assert rows == [("Newest", datetime(2026, 11, 20, 12))]
    # ... and across batches a late event never overwrites newer details.
    await sink.write(_batch([_moved(tx, "Older", t0 - timedelta(days=1))], first_offset=3))
    rows = await fetch_all(warehouse_db, f"SELECT user_city FROM dim_users WHERE user_id = '{tx.user.id}'")
    assert rows == [("Newest",)]
    await sink.write(_batch([_moved(tx, "Moved", t0 + timedelta(days=1))], first_offset=4))
    rows = await fetch_all(warehouse_db, f"SELECT user_city FROM dim_users WHERE user_id = '{tx.user.id}'")
    assert rows == [("Moved",)]


async def test_an_inferred_dimension_row_is_completed_without_touching_its_facts(sink, warehouse_db):
    tx = next(iter(generate(1, seed=10, now=NOW)))
    connection = await aiomysql.connect(**warehouse_db.connect_kwargs)
    try:
        async with connection.cursor() as cursor:
            await cursor.execute("INSERT INTO dim_users (user_id, is_inferred) VALUES (%s, TRUE)", (tx.user.id,))
            await cursor.execute(
                "INSERT INTO fact_user_transaction_summary (user_id, transaction_type, total_amount, transaction_count, avg_amount) "
                "VALUES (%s, 'PURCHASE', 10, 1, 10)",
                (tx.user.id,),
            )
        await connection.commit()
    finally:
        connection.close()
    await sink.write(_batch([tx]))
    rows = await fetch_all(warehouse_db, f"SELECT user_name, user_email, is_inferred FROM dim_users WHERE user_id = '{tx.user.id}'")
    assert rows == [(tx.user.name, tx.user.email, 0)]
    facts = await fetch_all(warehouse_db, f"SELECT count(*) FROM fact_user_transaction_summary WHERE user_id = '{tx.user.id}'")
    assert facts == [(1,)], "an upsert must never delete (REPLACE would cascade to the facts)"


async def test_unicode_lands_verbatim(sink, warehouse_db):
    tx = next(iter(generate(1, seed=12, now=NOW)))
    odd = tx.model_copy(update={"user": tx.user.model_copy(update={"name": "Zoë 王芳 🚀 O'Brien; DROP TABLE dim_users;--"})})
    await sink.write(_batch([odd]))
    rows = await fetch_all(warehouse_db, f"SELECT user_name FROM dim_users WHERE user_id = '{tx.user.id}'")
    assert rows == [("Zoë 王芳 🚀 O'Brien; DROP TABLE dim_users;--",)]


async def test_an_unreachable_server_is_a_transient_error(warehouse_db):
    settings = _settings(warehouse_db).model_copy(update={"port": 1, "connect_timeout_s": 1.0})
    sink = WarehouseSink(settings)
    tx = next(iter(generate(1, seed=1, now=NOW)))
    with pytest.raises(WarehouseSinkError):
        await sink.write(_batch([tx]))
    await sink.stop()
