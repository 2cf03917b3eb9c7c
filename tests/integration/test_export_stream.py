"""Stream exports end to end: real Kafka, the real worker landing the lake and the warehouse, the test
ksqlDB server serving the same Kafka records with their coordinates, `txlake export stream`."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from app.ops.progress import wait_until_landed
from tests.integration.export_helpers import ExportProcess, kafka_stream_dataset
from tests.integration.harness import fetch_all, produce_demo, read_lake
from tests.ksqldb_server import _TX_COLUMNS, Knobs, KsqlDBTestServer

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 24, 18, 0, tzinfo=UTC)
USERS_SQL = "SELECT user_id, user_name, user_email, user_country, user_city, last_event_at FROM dim_users ORDER BY user_id"


@pytest.fixture
async def landed(deploy: Any) -> AsyncIterator[Any]:
    """A deployment whose worker landed 800 transactions (2 partitions), and is still running."""
    deployment = await deploy(partitions=2)
    await produce_demo(deployment, 800, seed=5, now=NOW)
    deployment.worker().start()
    await wait_until_landed(deployment.settings, deployment.feeds, 180)
    yield deployment


async def _ksqldb_for(deployment: Any, **knobs: Any) -> KsqlDBTestServer:
    feed = deployment.feed("transaction_stream")
    dataset = await kafka_stream_dataset(deployment.settings.kafka.bootstrap_servers, feed.topic,
                                         "TRANSACTION_STREAM", _TX_COLUMNS)
    server = KsqlDBTestServer({"TRANSACTION_STREAM": dataset}, Knobs(**knobs))
    await server.start()
    return server


def _coordinates(deployment: Any) -> Counter[tuple[int, int]]:
    table = read_lake(deployment, "transaction_stream")
    return Counter(zip(table.column("_kafka_partition").to_pylist(), table.column("_kafka_offset").to_pylist(), strict=True))


def _kafka_coordinates(server: KsqlDBTestServer) -> Counter[tuple[int, int]]:
    return Counter((p, o) for _, p, o, _ in server.datasets["TRANSACTION_STREAM"].rows())


def _days(deployment: Any) -> list[Path]:
    root = Path(deployment.settings.lake.root) / deployment.feed("transaction_stream").dataset
    return sorted(root.glob("year=*/month=*/day=*"))


def _range(days: list[Path]) -> tuple[str, str]:
    def as_date(path: Path) -> date:
        return date(*(int(part.split("=")[1]) for part in path.parts[-3:]))
    return as_date(days[0]).isoformat(), as_date(days[-1]).isoformat()


async def test_stream_export_rebuilds_lost_days_and_dimensions(landed: Any) -> None:
    deployment = landed
    server = await _ksqldb_for(deployment, chunk_bytes=1000)
    try:
        kafka = _kafka_coordinates(server)
        assert _coordinates(deployment) == kafka  # what the streaming path landed
        days = _days(deployment)
        first, last = _range(days)
        lost = days[1]
        for file in lost.iterdir():  # a lost day ...
            file.unlink()
        next(days[2].iterdir()).unlink()  # ... and one lost file of another day
        assert sum(_coordinates(deployment).values()) < sum(kafka.values())
        env = {**deployment.env, "TXLAKE_KSQLDB__URL": server.url}
        export = await ExportProcess.start(env, "stream", "TRANSACTION_STREAM", "--from-day", first, "--to-day", last)
        code, final = await export.finish()
        assert code == 0, export.stderr
        assert final["state"] == "succeeded" and final["rows"] == sum(kafka.values())
        assert set(final["result"]["days"]) == {d.isoformat() for d in _dates(first, last)}
        assert _coordinates(deployment) == kafka  # every Kafka record exactly once again
        assert not list((Path(deployment.settings.lake.root) / "_txlake" / "exports" / "work").glob("*/*"))
    finally:
        await server.stop()


def _dates(first: str, last: str) -> list[date]:
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return [date.fromordinal(n) for n in range(start.toordinal(), end.toordinal() + 1)]


async def test_stream_export_refreshes_dimensions_latest_event_wins(landed: Any, warehouse_db: Any) -> None:
    deployment = landed
    users = await fetch_all(warehouse_db, USERS_SQL)
    connection_rows = {row[0]: row for row in users}
    victims = sorted(connection_rows)[:25]
    await _execute(warehouse_db, f"DELETE FROM dim_users WHERE user_id IN ({', '.join(['%s'] * len(victims))})", victims)
    # a stale value must not win over the stored newer one
    await _execute(warehouse_db, "UPDATE dim_users SET user_city = 'Nowhere', last_event_at = '2100-01-01' WHERE user_id = %s",
                   [sorted(connection_rows)[-1]])
    server = await _ksqldb_for(deployment)
    try:
        first, last = _range(_days(deployment))
        env = {**deployment.env, "TXLAKE_KSQLDB__URL": server.url}
        export = await ExportProcess.start(env, "stream", "transaction_stream", "--from-day", first, "--to-day", last)
        code, final = await export.finish()
        assert code == 0, export.stderr
        assert final["result"]["dimensions"]["dim_users"] == len(users)
    finally:
        await server.stop()
    after = {row[0]: row for row in await fetch_all(warehouse_db, USERS_SQL)}
    for user in victims:
        assert after[user] == connection_rows[user]  # restored from the latest event
    assert after[sorted(connection_rows)[-1]][4] == "Nowhere"  # newer stored value kept


async def test_stream_export_races_the_running_worker_without_duplicates_or_gaps(landed: Any) -> None:
    deployment = landed
    server = await _ksqldb_for(deployment, row_delay_s=0.002, chunk_bytes=200)
    try:
        first, last = _range(_days(deployment))
        env = {**deployment.env, "TXLAKE_KSQLDB__URL": server.url}
        export = await ExportProcess.start(env, "stream", "TRANSACTION_STREAM", "--from-day", first, "--to-day", last)
        await export.wait_for_rows(50)
        # The streaming path lands new records into the same days while the export runs.
        await produce_demo(deployment, 600, seed=6, now=NOW)
        code, final = await export.finish(timeout_s=240)
        assert code == 0, export.stderr
        await wait_until_landed(deployment.settings, deployment.feeds, 180)
    finally:
        await server.stop()
    after = await kafka_stream_dataset(deployment.settings.kafka.bootstrap_servers,
                                       deployment.feed("transaction_stream").topic, "T", _TX_COLUMNS)
    kafka = Counter((p, o) for _, p, o, _ in after.rows())
    landed_now = _coordinates(deployment)
    assert max(landed_now.values()) == 1, "a record is in the lake twice"
    assert landed_now == kafka, "a record is missing from the lake"
    assert final["skipped_rows"] == 0 and final["rows"] == 800


async def test_stream_exports_that_fail_or_are_cancelled_change_nothing(landed: Any) -> None:
    deployment = landed
    lake = Path(deployment.settings.lake.root)
    server = await _ksqldb_for(deployment)
    try:
        before = sorted(lake.rglob("*.parquet"))
        first, last = _range(_days(deployment))
        env = {**deployment.env, "TXLAKE_KSQLDB__URL": server.url}
        args = ("stream", "TRANSACTION_STREAM", "--from-day", first, "--to-day", last)
        # ksqlDB no longer serves offsets the lake holds (Kafka retention): refused
        rows = list(server.datasets["TRANSACTION_STREAM"].rows())
        server.datasets["TRANSACTION_STREAM"].rows = lambda: iter([r for r in rows if not (r[1] == 0 and r[2] < 50)])
        code, final = await (await ExportProcess.start(env, *args)).finish()
        assert code == 1 and "retention" in final["errors"][-1]
        # ksqlDB serves fewer records than the lake holds (say, a ROWTIME that is not the event time)
        server.datasets["TRANSACTION_STREAM"].rows = lambda: iter([r for r in rows if not (r[1] == 0 and 100 <= r[2] < 110)])
        code, final = await (await ExportProcess.start(env, *args)).finish()
        assert code == 1 and "would lose rows" in final["errors"][-1]
        server.datasets["TRANSACTION_STREAM"].rows = lambda: iter(rows)
        # a pre-0.24 ksqlDB has no ROWPARTITION/ROWOFFSET: refused with ksqlDB's own error
        server.knobs.legacy = True
        code, final = await (await ExportProcess.start(env, *args)).finish()
        assert code == 1 and "ROWPARTITION" in final["errors"][-1] and "40001" in final["errors"][-1]
        server.knobs.legacy = False
        # a source ksqlDB does not have (DESCRIBE before any query)
        code, final = await (await ExportProcess.start(env, "table", "PAYMENT_METHOD_TOTALS")).finish()
        assert code == 1 and "Could not find" in final["errors"][-1] and "[40001]" in final["errors"][-1]
        # cancelled (SIGTERM) while querying
        server.knobs.row_delay_s = 0.01
        export = await ExportProcess.start(env, *args)
        await export.wait_for_rows(20)
        export.process.terminate()
        code, final = await export.finish()
        assert code == 130 and final["state"] == "cancelled"
    finally:
        await server.stop()
    assert sorted(lake.rglob("*.parquet")) == before
    assert not list((lake / "_txlake" / "exports" / "work").glob("*/*"))


async def _execute(warehouse_db: Any, sql: str, args: list[Any]) -> None:
    import aiomysql

    connection = await aiomysql.connect(**warehouse_db.connect_kwargs)
    try:
        async with connection.cursor() as cursor:
            await cursor.execute(sql, args)
        await connection.commit()
    finally:
        connection.close()
    await asyncio.sleep(0)
