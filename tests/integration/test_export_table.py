"""Table exports end to end: the test ksqlDB server → `txlake export table` → a snapshot version in the
real MariaDB warehouse and the lake; a SIGKILLed export leaves the previous version current."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest

from app.core.settings import Settings
from app.snapshots import Snapshotter
from tests.integration.export_helpers import ExportProcess, serving
from tests.integration.snapshot_helpers import fetchall
from tests.ksqldb_server import Dataset, KsqlDBTestServer, loadgen_datasets

pytestmark = pytest.mark.integration

DATASETS = loadgen_datasets(1500, seed=11)


@pytest.fixture
async def ksqldb() -> AsyncIterator[KsqlDBTestServer]:
    async with serving(DATASETS) as server:
        yield server


def _env(warehouse_db: Any, lake: Path, ksqldb: KsqlDBTestServer) -> dict[str, str]:
    return {
        "TXLAKE_MYSQL__HOST": warehouse_db.host, "TXLAKE_MYSQL__PORT": str(warehouse_db.port),
        "TXLAKE_MYSQL__USER": warehouse_db.user, "TXLAKE_MYSQL__PASSWORD": warehouse_db.password,
        "TXLAKE_MYSQL__DATABASE": warehouse_db.database, "TXLAKE_LAKE__ROOT": str(lake),
        "TXLAKE_LAKE__FSYNC": "false", "TXLAKE_KSQLDB__URL": ksqldb.url, "TXLAKE_KSQLDB__RETRIES": "1",
        "TXLAKE_SNAPSHOTS__LEASE_S": "3", "TXLAKE_SNAPSHOTS__ROW_GROUP_ROWS": "100", "TXLAKE_LOG_FORMAT": "text",
    }


def _settings(env: dict[str, str]) -> Settings:
    return Settings(
        mysql={"host": env["TXLAKE_MYSQL__HOST"], "port": int(env["TXLAKE_MYSQL__PORT"]), "user": env["TXLAKE_MYSQL__USER"],
               "password": env["TXLAKE_MYSQL__PASSWORD"], "database": env["TXLAKE_MYSQL__DATABASE"]},
        lake={"root": env["TXLAKE_LAKE__ROOT"], "fsync": False}, snapshots={"lease_s": 3},
    )


async def test_table_export_creates_a_new_version_each_time(warehouse_db: Any, warehouse_conn: Any, tmp_path: Path,
                                                            ksqldb: KsqlDBTestServer) -> None:
    env = _env(warehouse_db, tmp_path / "lake", ksqldb)
    expected = [values for _, _, _, values in DATASETS["USER_TRANSACTION_SUMMARY"].rows()]
    for version in (1, 2):
        export = await ExportProcess.start(env, "table", "USER_TRANSACTION_SUMMARY")
        code, final = await export.finish()
        assert code == 0, export.stderr
        assert final["state"] == "succeeded" and final["rows"] == len(expected)
        assert final["result"] == {"table": "user_transaction_summary", "version": version,
                                   "row_count": len(expected), "status": "complete"}
    versions = await Snapshotter(_settings(env)).versions("user_transaction_summary")
    assert [(v.version, v.status, v.triggered_by) for v in versions] == [(1, "complete", "export"), (2, "complete", "export")]
    assert versions[1].source["query"] == "SELECT * FROM USER_TRANSACTION_SUMMARY;"
    rows = await fetchall(warehouse_conn, "SELECT user_id, transaction_type, total_amount, transaction_count "
                          "FROM fact_user_transaction_summary WHERE snapshot_version = 2 ORDER BY user_id, transaction_type")
    assert [(u, t, float(a), c) for u, t, a, c in rows] == [(u, t, a, c) for u, t, a, c, _ in expected]
    lake = ds.dataset(tmp_path / "lake" / "tables" / "user_transaction_summary" / "version=v2", format="parquet")
    assert lake.count_rows() == len(expected)


async def test_export_killed_midway_leaves_the_previous_version_current(
    warehouse_db: Any, tmp_path: Path, ksqldb: KsqlDBTestServer
) -> None:
    env = _env(warehouse_db, tmp_path / "lake", ksqldb)
    code, _ = await (await ExportProcess.start(env, "table", "PAYMENT_METHOD_TOTALS")).finish()
    assert code == 0
    small = DATASETS["PAYMENT_METHOD_TOTALS"]
    ksqldb.datasets["PAYMENT_METHOD_TOTALS"] = Dataset(  # more rows, slowly
        small.name, "TABLE", small.topic, small.columns,
        lambda: ((0, i % 4, i, [f"PM-{i}", f"method {i}", float(i), i + 1, 1.0]) for i in range(5000)), count=5000)
    ksqldb.knobs.row_delay_s = 0.01
    ksqldb.knobs.chunk_bytes = 64
    doomed = await ExportProcess.start(env, "table", "PAYMENT_METHOD_TOTALS")
    await doomed.wait_for_rows(300)  # three batches of 100 went into the version's files
    await doomed.kill()
    snapshotter = Snapshotter(_settings(env))
    versions = await snapshotter.versions("payment_method_totals")
    assert [(v.version, v.status) for v in versions] == [(1, "complete"), (2, "building")]
    published = sorted(p.name for p in (tmp_path / "lake" / "tables" / "payment_method_totals").glob("version=*"))
    assert published == ["version=v1"]  # nothing of v2 is visible
    await asyncio.sleep(3.5)  # the killed taker's lease runs out
    await snapshotter.maintain()
    versions = await snapshotter.versions("payment_method_totals")
    assert [(v.version, v.status) for v in versions] == [(1, "complete"), (2, "failed")]
    # The kernel dropped the killed export's dataset lock: the next export runs.
    ksqldb.datasets["PAYMENT_METHOD_TOTALS"] = small
    ksqldb.knobs.row_delay_s = 0
    code, final = await (await ExportProcess.start(env, "table", "PAYMENT_METHOD_TOTALS")).finish()
    assert code == 0 and final["result"]["version"] == 3


async def test_failed_export_reports_the_ksqldb_error_and_exits_non_zero(
    warehouse_db: Any, tmp_path: Path, ksqldb: KsqlDBTestServer
) -> None:
    env = _env(warehouse_db, tmp_path / "lake", ksqldb)
    ksqldb.knobs.error_after = 250  # after the first batch of 100 rows reached the version
    ksqldb.knobs.chunk_bytes = 512
    export = await ExportProcess.start(env, "table", "USER_TRANSACTION_SUMMARY")
    code, final = await export.finish()
    assert code == 1 and final["state"] == "failed"
    assert "injected" in final["errors"][-1] and "failed" in export.stderr
    versions = await Snapshotter(_settings(env)).versions("user_transaction_summary")
    assert [(v.version, v.status) for v in versions] == [(1, "failed")]
    assert not list((tmp_path / "lake" / "tables").glob("*/version=*"))
