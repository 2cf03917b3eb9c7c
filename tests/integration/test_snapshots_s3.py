"""Snapshot versions on an S3 lake (moto server, as tests/integration/test_lake_s3.py): publish, catalog, retention."""

from __future__ import annotations

import json
from decimal import Decimal

import pyarrow.dataset as ds
import pytest

from app.core.settings import Settings
from app.lake.catalog import describe_dataset, list_datasets, read_latest
from app.lake.files import list_tree
from app.snapshots import Snapshotter
from tests.integration.snapshot_helpers import write_live
from tests.integration.test_lake_s3 import lake as s3_lake  # noqa: F401 - fixture
from tests.integration.test_lake_s3 import s3_endpoint  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

UTS = "user_transaction_summary"


async def test_versions_publish_and_expire_on_s3(warehouse_db, warehouse_conn, s3_lake):  # noqa: F811 - the S3 lake fixture
    settings = Settings(
        mysql={
            "host": warehouse_db.host, "port": warehouse_db.port, "user": warehouse_db.user,
            "password": warehouse_db.password, "database": warehouse_db.database,
        },
        lake=s3_lake.model_dump(),
        snapshots={"retention_versions": 1, "rows_per_file": 2, "row_group_rows": 2},
    )
    snapshotter = Snapshotter(settings)
    storage = snapshotter.storage
    await write_live(warehouse_conn, [(f"u{i}", "purchase", Decimal(i), 1) for i in range(5)], {0: 4})
    first = await snapshotter.take_live_version(UTS)
    assert first.lake_path == "tables/user_transaction_summary/version=v1"
    assert len(list_tree(storage, first.lake_path)) == 3  # 5 rows, 2 per file
    latest = read_latest(storage, UTS)
    assert latest["version"] == 1 and len(latest["files"]) == 3
    table = ds.dataset([storage.key(p) for p in latest["files"]], filesystem=storage.filesystem, format="parquet").to_table()
    assert sorted(table.column("user_id").to_pylist()) == [f"u{i}" for i in range(5)]

    await write_live(warehouse_conn, [("u9", "purchase", Decimal(9), 1)], {0: 5})
    second = await snapshotter.take_live_version(UTS)
    assert second.row_count == 6
    assert list_tree(storage, first.lake_path) == []  # v1 expired: its objects are gone
    assert list_tree(storage, "_txlake/staging") == []
    described = describe_dataset(storage, f"tables/{UTS}")
    assert described["latest_version"] == 2
    assert [(v["version"], v["status"]) for v in described["versions"]] == [(1, "expired"), (2, "complete")]
    assert described["file_count"] == 3
    assert [d["dataset"] for d in list_datasets(storage)] == [f"tables/{UTS}"]
    assert json.loads(storage.read(f"tables/{UTS}/_latest"))["version"] == 2
