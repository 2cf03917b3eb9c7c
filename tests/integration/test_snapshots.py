"""Snapshot versions against the real MariaDB and a local lake: content, isolation, numbering, recovery, retention, views."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from app.lake.catalog import describe_dataset, read_latest
from app.snapshots import Snapshotter
from app.snapshots.commit import commit_version
from app.snapshots.db import connect
from app.snapshots.files import VersionFileWriter
from app.snapshots.sources import conform
from app.snapshots.tables import table_spec
from tests.integration.snapshot_helpers import DatabaseClockAhead, fetchall, live_settings, write_live

pytestmark = pytest.mark.integration

UTS = "user_transaction_summary"
ROWS = [
    ("u1", "purchase", Decimal("100.25"), 4),
    ("u1", "refund", Decimal("-20.00"), 1),
    ("u2", "purchase", Decimal("7.10"), 3),
]


@pytest.fixture
def settings(warehouse_db, tmp_path):
    return live_settings(warehouse_db, tmp_path / "lake")


@pytest.fixture
def snapshotter(settings):
    return Snapshotter(settings)


async def _live(conn):
    return await fetchall(
        conn,
        "SELECT user_id, transaction_type, total_amount, transaction_count, avg_amount "
        "FROM fact_user_transaction_summary WHERE snapshot_version = 0 ORDER BY user_id, transaction_type",
    )


async def _version_rows(conn, version):
    return await fetchall(
        conn,
        "SELECT user_id, transaction_type, total_amount, transaction_count, avg_amount "
        "FROM fact_user_transaction_summary WHERE snapshot_version = %s ORDER BY user_id, transaction_type",
        (version,),
    )


def _lake_rows(lake_root, info):
    table = ds.dataset(str(lake_root / info.lake_path), format="parquet").to_table()
    return sorted(tuple(r.values()) for r in table.to_pylist())


async def test_version_equals_live_state_at_its_offsets(warehouse_conn, snapshotter, settings):
    await write_live(warehouse_conn, ROWS, {0: 41, 1: 7})
    info = await snapshotter.take_live_version(UTS)

    assert (info.version, info.status, info.row_count) == (1, "complete", 3)
    assert info.source_offsets == {"USER_TRANSACTION_SUMMARY": {"0": 41, "1": 7}}
    live = await _live(warehouse_conn)
    assert await _version_rows(warehouse_conn, 1) == live
    assert _lake_rows(settings.lake.root, info) == sorted(live)
    assert info.lake_path == "tables/user_transaction_summary/version=v1"
    latest = read_latest(snapshotter.storage, UTS)
    assert latest["version"] == 1 and latest["row_count"] == 3 and len(latest["files"]) == 1
    assert latest["source_offsets"] == info.source_offsets
    described = describe_dataset(snapshotter.storage, "tables/user_transaction_summary")
    assert described["latest_version"] == 1 and described["file_count"] == 1
    assert [v["status"] for v in described["versions"]] == ["complete"]
    assert [f["name"] for f in described["schema"]] == list(table_spec(UTS).columns)
    assert not list((settings.lake.root / "_txlake" / "staging").rglob("*.parquet"))


async def test_version_unchanged_after_later_live_updates(warehouse_conn, snapshotter, settings):
    await write_live(warehouse_conn, ROWS, {0: 10})
    first = await snapshotter.take_live_version(UTS)
    before = await _version_rows(warehouse_conn, 1)
    await write_live(warehouse_conn, [("u1", "purchase", Decimal("999.99"), 9), ("u3", "purchase", Decimal("1.00"), 1)], {0: 20})
    async with warehouse_conn.cursor() as cur:  # a tombstone in the live state
        await cur.execute("DELETE FROM fact_user_transaction_summary WHERE user_id = 'u2' AND snapshot_version = 0")
    await warehouse_conn.commit()
    second = await snapshotter.take_live_version(UTS)

    assert await _version_rows(warehouse_conn, 1) == before
    assert _lake_rows(settings.lake.root, first) == sorted(before)
    assert second.version == 2 and second.source_offsets == {"USER_TRANSACTION_SUMMARY": {"0": 20}}
    assert await _version_rows(warehouse_conn, 2) == await _live(warehouse_conn)
    assert read_latest(snapshotter.storage, UTS)["version"] == 2


async def test_version_is_consistent_while_the_live_sink_writes(warehouse_db, warehouse_conn, snapshotter):
    """A writer commits (row value = its offset, ledger = offset) in one transaction; each version must match."""
    await write_live(warehouse_conn, [(f"u{i:03d}", "purchase", Decimal(0), 1) for i in range(300)], {0: 0})
    stop = asyncio.Event()

    async def live_sink():
        offset = 0
        async with connect(snapshotter.settings.mysql) as conn:
            while not stop.is_set():
                offset += 1
                rows = [(f"u{i:03d}", "purchase", Decimal(offset), 1) for i in range(300)]
                await write_live(conn, rows, {0: offset})

    writer = asyncio.create_task(live_sink())
    try:
        versions = [await snapshotter.take_live_version(UTS) for _ in range(4)]
    finally:
        stop.set()
        await writer
    for info in versions:
        landed = info.source_offsets["USER_TRANSACTION_SUMMARY"]["0"]
        amounts = {row[2] for row in await _version_rows(warehouse_conn, info.version)}
        assert amounts == {Decimal(landed).quantize(Decimal("0.01"))}, (info.version, landed)
    assert len({v.source_offsets["USER_TRANSACTION_SUMMARY"]["0"] for v in versions}) > 1


async def test_concurrent_takers_get_distinct_consecutive_numbers_and_one_version_per_trigger_key(
    warehouse_conn, settings
):
    await write_live(warehouse_conn, ROWS, {0: 5})
    takers = [Snapshotter(settings) for _ in range(4)]
    manual = await asyncio.gather(*(t.take_live_version(UTS) for t in takers for _ in range(2)))
    assert sorted(v.version for v in manual) == list(range(1, 9))
    assert len({v.owner for v in manual}) == 4

    scheduled = await asyncio.gather(
        *(t.take_live_version(UTS, trigger="schedule", trigger_key="schedule:2026-11-26T00:00Z") for t in takers)
    )
    assert {v.version for v in scheduled} == {9}
    rows = await fetchall(
        warehouse_conn, "SELECT COUNT(*) FROM txlake_snapshot_versions WHERE trigger_key = 'schedule:2026-11-26T00:00Z'"
    )
    assert rows == [(1,)]
    assert (await fetchall(warehouse_conn, "SELECT COUNT(*) FROM fact_user_transaction_summary WHERE snapshot_version = 9")) == [(3,)]


async def _batches(*batches):
    for batch in batches:
        yield batch


async def test_exported_rows_create_inferred_dimension_members(warehouse_conn, snapshotter, settings):
    """The re-export API: foreign rows (doubles, extra columns, unknown payment method) become a version."""
    batch = pa.RecordBatch.from_pydict(
        {
            "PAYMENT_METHOD_ID_RAW": ["x", "y"],
            "payment_method_id": ["pm-new", "pm-other"],
            "payment_method_name": ["New card", None],
            "total_amount": [1234.5, 0.1],
            "transaction_count": [3, 1],
            "avg_amount": [411.5, 0.1],
        }
    )
    info = await snapshotter.create_version(
        "payment_method_totals", _batches(batch), source={"kind": "ksqldb", "query": "SELECT * FROM PAYMENT_METHOD_TOTALS;"}
    )
    assert (info.status, info.row_count, info.triggered_by) == ("complete", 2, "export")
    assert info.source == {"kind": "ksqldb", "query": "SELECT * FROM PAYMENT_METHOD_TOTALS;"}
    dims = await fetchall(warehouse_conn, "SELECT payment_method_id, is_inferred FROM dim_payment_methods ORDER BY 1")
    assert dims == [("pm-new", 1), ("pm-other", 1)]
    facts = await fetchall(
        warehouse_conn,
        "SELECT payment_method_id, total_amount, avg_amount FROM fact_payment_method_totals WHERE snapshot_version = %s ORDER BY 1",
        (info.version,),
    )
    assert facts == [("pm-new", Decimal("1234.50"), Decimal("411.5000")), ("pm-other", Decimal("0.10"), Decimal("0.1000"))]


async def test_a_failing_source_leaves_no_visible_version(warehouse_conn, snapshotter, settings):
    spec = table_spec(UTS)

    async def broken():
        yield pa.RecordBatch.from_pylist([{"user_id": "u9", "transaction_type": "purchase"}], schema=spec.arrow_schema)
        raise ConnectionError("ksqlDB went away")

    with pytest.raises(Exception, match="ksqlDB went away"):
        await snapshotter.create_version(UTS, broken(), trigger_key="export:retry-me")
    (failed,) = await snapshotter.versions(UTS)
    assert failed.status == "failed" and "ksqlDB went away" in failed.error
    assert failed.trigger_key == "export:retry-me#failed-v1" and failed.lake_staging_path is None
    assert await fetchall(warehouse_conn, "SELECT COUNT(*) FROM fact_user_transaction_summary WHERE snapshot_version = 1") == [(0,)]
    assert not (settings.lake.root / "tables" / UTS / "version=v1").exists()
    assert not list(settings.lake.root.rglob("*.parquet"))
    retried = await snapshotter.create_version(UTS, _batches(), trigger_key="export:retry-me")
    assert (retried.version, retried.status, retried.row_count) == (2, "complete", 0)


async def _stage_and_commit(snapshotter, rows):
    """Steps 1-3 of a version (allocate, stage, commit) without publishing: a taker that died after the commit."""
    spec = table_spec(UTS)
    info, _ = await snapshotter.begin(UTS, "manual", None, None)
    writer = VersionFileWriter(
        snapshotter.storage, info.lake_staging_path, spec.arrow_schema, compression="snappy", rows_per_file=2, row_group_rows=1
    )
    await writer.write(conform(spec, pa.RecordBatch.from_pylist(rows)))
    await writer.close()
    async with connect(snapshotter.settings.mysql) as conn:
        await commit_version(conn, spec, info, snapshotter.storage, source={"kind": "test"}, offsets=None, batch_rows=10)
    return info


ROW_DICTS = [
    {"user_id": f"u{i}", "transaction_type": "purchase", "total_amount": Decimal(i), "transaction_count": i, "avg_amount": Decimal(1)}
    for i in range(1, 6)
]


@pytest.mark.parametrize("staging_lost", [False, True], ids=["staged-files", "staging-gone"])
async def test_recovery_rolls_forward_a_complete_unpublished_version(warehouse_db, tmp_path, staging_lost):
    settings = live_settings(warehouse_db, tmp_path / "lake", lease_s=0.5)
    snapshotter = Snapshotter(settings)
    info = await _stage_and_commit(snapshotter, ROW_DICTS)
    staged = settings.lake.root / info.lake_staging_path
    assert len(list(staged.glob("*.parquet"))) == 3  # 2 rows per file
    if staging_lost:
        import shutil

        shutil.rmtree(staged)
    assert read_latest(snapshotter.storage, UTS) is None
    # Recovery leaves just-committed versions to their taker for one lease: look from past it.
    snapshotter.clock = DatabaseClockAhead(settings.snapshots.lease_s + 0.1)
    report = await snapshotter.maintain()

    assert report.published == [(UTS, 1)]
    (done,) = await snapshotter.versions(UTS)
    assert done.published and done.lake_path == "tables/user_transaction_summary/version=v1"
    lake = ds.dataset(str(settings.lake.root / done.lake_path), format="parquet").to_table()
    assert sorted(lake.column("user_id").to_pylist()) == [f"u{i}" for i in range(1, 6)]
    assert read_latest(snapshotter.storage, UTS)["version"] == 1
    assert not staged.exists()


async def test_retention_expires_old_versions_rows_and_files(warehouse_db, warehouse_conn, tmp_path):
    settings = live_settings(warehouse_db, tmp_path / "lake", retention_versions=2)
    snapshotter = Snapshotter(settings)
    await write_live(warehouse_conn, ROWS, {0: 1})
    for _ in range(4):
        await snapshotter.take_live_version(UTS)
    statuses = [(v.version, v.status, v.lake_path is not None) for v in await snapshotter.versions(UTS)]
    assert statuses == [(1, "expired", False), (2, "expired", False), (3, "complete", True), (4, "complete", True)]
    versions = await fetchall(
        warehouse_conn, "SELECT DISTINCT snapshot_version FROM fact_user_transaction_summary ORDER BY 1"
    )
    assert versions == [(0,), (3,), (4,)]
    dirs = sorted(p.name for p in (settings.lake.root / "tables" / UTS).iterdir() if p.is_dir())
    assert dirs == ["version=v3", "version=v4"]
    catalog = json.loads((settings.lake.root / "_txlake/catalog/tables/user_transaction_summary.json").read_text())
    assert [(v["version"], v["status"]) for v in catalog["versions"]] == [
        (1, "expired"), (2, "expired"), (3, "complete"), (4, "complete")
    ]


async def test_views_return_live_and_latest_complete_rows(warehouse_conn, snapshotter):
    await write_live(warehouse_conn, ROWS, {0: 1})
    await snapshotter.take_live_version(UTS)
    await write_live(warehouse_conn, [("u1", "purchase", Decimal("500.00"), 5)], {0: 2})
    await snapshotter.take_live_version(UTS)
    await write_live(warehouse_conn, [("u1", "purchase", Decimal("600.00"), 6)], {0: 3})
    # A version still building (its rows can't exist yet) and a failed one must not change "latest".
    async with warehouse_conn.cursor() as cur:
        await cur.execute(
            "INSERT INTO txlake_snapshot_versions (table_name, version, status, triggered_by, trigger_key, snapshot_date, owner) "
            "VALUES (%s, 3, 'building', 'manual', 'manual:b', CURDATE(), 'nobody')",
            (UTS,),
        )
    await warehouse_conn.commit()

    live = await fetchall(warehouse_conn, "SELECT user_id, transaction_type, total_amount FROM v_fact_user_transaction_summary_live ORDER BY 1, 2")
    latest = await fetchall(
        warehouse_conn, "SELECT user_id, transaction_type, total_amount, snapshot_version FROM v_fact_user_transaction_summary_latest ORDER BY 1, 2"
    )
    assert live == [("u1", "purchase", Decimal("600.00")), ("u1", "refund", Decimal("-20.00")), ("u2", "purchase", Decimal("7.10"))]
    assert latest == [
        ("u1", "purchase", Decimal("500.00"), 2), ("u1", "refund", Decimal("-20.00"), 2), ("u2", "purchase", Decimal("7.10"), 2)
    ]
    for name in ("user_transaction_summary_eur", "payment_method_totals", "product_purchase_counts"):
        assert await fetchall(warehouse_conn, f"SELECT COUNT(*) FROM v_fact_{name}_latest") == [(0,)]
        assert await fetchall(warehouse_conn, f"SELECT COUNT(*) FROM v_fact_{name}_live") == [(0,)]


async def test_versions_need_only_dml_grants(warehouse_db, warehouse_conn, snapshotter):
    """The application user has SELECT/INSERT/UPDATE/DELETE and nothing else, and that is enough."""
    grants = [g[0] for g in await fetchall(warehouse_conn, "SHOW GRANTS FOR CURRENT_USER()")]
    on_db = [g for g in grants if warehouse_db.database in g]
    assert on_db and all(g.startswith("GRANT SELECT, INSERT, UPDATE, DELETE ON") for g in on_db), grants
    assert not any("CREATE" in g or "ALL PRIVILEGES" in g for g in grants), grants
    await write_live(warehouse_conn, ROWS, {0: 1})
    info = await snapshotter.take_live_version(UTS)
    assert info.status == "complete" and info.published


async def test_recovery_fails_a_building_version_only_once_its_lease_ran_out(warehouse_conn, snapshotter):
    async with warehouse_conn.cursor() as cur:
        await cur.execute(
            "INSERT INTO txlake_snapshot_versions (table_name, version, status, triggered_by, trigger_key, snapshot_date, owner) "
            "VALUES (%s, 1, 'building', 'schedule', 'schedule:2026-11-26T00:00Z', CURDATE(), 'other-worker')",
            (UTS,),
        )
    await warehouse_conn.commit()
    assert (await snapshotter.maintain()).failed == []  # lease_s = 120: the taker is presumed alive
    async with warehouse_conn.cursor() as cur:
        await cur.execute("UPDATE txlake_snapshot_versions SET heartbeat_at = heartbeat_at - INTERVAL 121 SECOND")
    await warehouse_conn.commit()
    assert (await snapshotter.maintain()).failed == [(UTS, 1)]
    # The schedule's trigger key is free again: the same fire time can make a new version.
    retried = await snapshotter.take_live_version(UTS, trigger="schedule", trigger_key="schedule:2026-11-26T00:00Z")
    assert (retried.version, retried.status) == (2, "complete")
