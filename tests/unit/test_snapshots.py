"""Snapshot versions and the lake catalog, without services: schedule, auth, schemas, files, catalog."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import SecretStr, ValidationError

from app.core.settings import Settings, SnapshotSettings, WebSettings
from app.lake.catalog import (
    catalog_is_current,
    describe_dataset,
    list_datasets,
    read_latest,
    write_table_catalog,
)
from app.lake.files import list_tree, move_tree, remove_tree
from app.lake.render import human_bytes, table
from app.lake.storage import LocalStorage
from app.snapshots.errors import SnapshotError
from app.snapshots.files import VersionFileWriter, read_batches
from app.snapshots.registry import VersionInfo
from app.snapshots.schedule import fire_time
from app.snapshots.sources import conform, rows_to_batch
from app.snapshots.tables import table_spec
from app.snapshots.web import authorized


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        ("2026-11-26T00:00:00", "2026-11-26T00:00:00"),  # on time
        ("2026-11-25T23:59:57.400", "2026-11-26T00:00:00"),  # woke up a little early
        ("2026-11-26T00:00:42", "2026-11-26T00:00:00"),  # late
        ("2026-11-26T13:30:00", "2026-11-26T00:00:00"),
    ],
)
def test_every_worker_maps_a_wake_up_to_the_same_fire_time(now, expected):
    assert fire_time("0 0 * * *", _utc(now)) == _utc(expected)


def test_fire_time_of_a_frequent_schedule():
    assert fire_time("*/5 * * * *", _utc("2026-11-26T00:04:58")) == _utc("2026-11-26T00:05:00")
    assert fire_time("*/5 * * * *", _utc("2026-11-26T00:07:00")) == _utc("2026-11-26T00:05:00")


def test_schedule_setting_is_validated_and_can_be_turned_off():
    assert SnapshotSettings().schedule == "0 0 * * *"
    assert SnapshotSettings(schedule="").schedule is None
    with pytest.raises(ValidationError):
        SnapshotSettings(schedule="every day at noon")


@pytest.mark.parametrize(
    ("token", "header", "expected"),
    [
        (None, "Bearer anything", 403),
        ("", "Bearer ", 403),
        ("t0ken", None, 401),
        ("t0ken", "Bearer nope", 401),
        ("t0ken", "t0ken", 401),
        ("t0ken", "Bearer t0ken", None),
    ],
)
def test_post_needs_a_configured_token(token, header, expected):
    settings = Settings(web=WebSettings(api_token=None if token is None else SecretStr(token)))
    assert authorized(settings, header) == expected


def test_the_token_is_hidden_when_settings_are_printed():
    assert "t0ken" not in repr(Settings(web=WebSettings(api_token=SecretStr("t0ken"))))


def test_conform_picks_and_casts_the_tables_columns():
    spec = table_spec("user_transaction_summary_eur")
    batch = pa.RecordBatch.from_pydict(
        {
            "exchange_rate": [0.92345678],
            "user_id": ["u1"],
            "extra": [1],
            "transaction_type": ["purchase"],
            "total_amount_eur": [0.129],
            "transaction_count": pa.array([3], pa.int32()),
            "avg_amount_eur": [3.33333],
        }
    )
    out = conform(spec, batch)
    assert out.schema == spec.arrow_schema
    assert out.to_pylist() == [
        {
            "user_id": "u1",
            "transaction_type": "purchase",
            "total_amount_eur": Decimal("0.13"),  # rounded to the column's scale, not truncated
            "transaction_count": 3,
            "avg_amount_eur": Decimal("3.3333"),
            "exchange_rate": Decimal("0.92345678"),
        }
    ]
    with pytest.raises(SnapshotError, match="lack column"):
        conform(spec, pa.RecordBatch.from_pydict({"user_id": ["u1"]}))


def test_conform_rounds_wider_decimals_half_up_to_the_columns_scale():
    """ksqlDB's EUR sums are DECIMAL(38, 10) before their cast; a wider decimal rounds as MariaDB would."""
    spec = table_spec("payment_method_totals")
    wide = pa.decimal128(38, 10)
    batch = pa.RecordBatch.from_pydict({
        "payment_method_id": ["pm1", "pm2", "pm3"],
        "payment_method_name": ["a", "b", "c"],
        "total_amount": pa.array([Decimal("1.0050000000"), Decimal("-1.0050000000"), Decimal("1011999999999989.8800000000")], wide),
        "transaction_count": [1, 1, 1100],
        "avg_amount": pa.array([Decimal("1.00005"), Decimal("-1.00005"), Decimal("919999999999.99080")], pa.decimal128(38, 5)),
    })
    out = conform(spec, batch)
    assert out.schema == spec.arrow_schema
    assert out.column("total_amount").to_pylist() == [Decimal("1.01"), Decimal("-1.01"), Decimal("1011999999999989.88")]
    assert out.column("avg_amount").to_pylist() == [Decimal("1.0001"), Decimal("-1.0001"), Decimal("919999999999.9908")]


def _rows(n: int) -> pa.RecordBatch:
    spec = table_spec("payment_method_totals")
    return rows_to_batch(spec, [(f"pm{i:03d}", None, Decimal(i), i, Decimal(1)) for i in range(n)])


async def test_writer_rolls_files_and_row_groups_and_reads_back_in_order(tmp_path):
    storage = LocalStorage(tmp_path, fsync=False)
    spec = table_spec("payment_method_totals")
    writer = VersionFileWriter(storage, "stage/v1", spec.arrow_schema, compression="snappy", rows_per_file=25, row_group_rows=10)
    for _ in range(7):
        await writer.write(_rows(9))  # 63 rows in batches that don't align with the row groups
    files = await writer.close()
    assert files == [f"stage/v1/part-{i:05d}.parquet" for i in range(3)]
    counts = [pq.ParquetFile(tmp_path / f).metadata.num_rows for f in files]
    assert counts == [25, 25, 13]
    assert [pq.ParquetFile(tmp_path / files[0]).metadata.row_group(i).num_rows for i in range(3)] == [10, 10, 5]
    back = pa.Table.from_batches(list(read_batches(storage, "stage/v1", 7)))
    assert back.num_rows == 63 and back.schema == spec.arrow_schema


async def test_an_empty_version_still_has_one_file_with_the_schema(tmp_path):
    storage = LocalStorage(tmp_path, fsync=False)
    spec = table_spec("product_purchase_counts")
    writer = VersionFileWriter(storage, "stage/v2", spec.arrow_schema, compression=None, rows_per_file=10, row_group_rows=10)
    (only,) = await writer.close()
    assert pq.read_schema(tmp_path / only) == spec.arrow_schema and pq.read_table(tmp_path / only).num_rows == 0


def test_move_tree_is_one_rename_locally_and_remove_tree_tolerates_missing(tmp_path):
    storage = LocalStorage(tmp_path, fsync=True)
    (tmp_path / "a").mkdir()
    for name in ("x.parquet", "y.parquet"):
        (tmp_path / "a" / name).write_bytes(b"1")
    assert move_tree(storage, "a", "tables/t/version=v1") == 2
    assert [f.path for f in list_tree(storage, "tables")] == ["tables/t/version=v1/x.parquet", "tables/t/version=v1/y.parquet"]
    assert move_tree(storage, "a", "tables/t/version=v1") == 0  # replay: nothing left to move
    remove_tree(storage, "tables/t")
    remove_tree(storage, "tables/t")
    assert list_tree(storage, "tables") == []


def _info(version: int, status: str, published: bool) -> VersionInfo:
    moment = datetime(2026, 11, 26, 0, 0, version)
    return VersionInfo(
        table="t", version=version, status=status, triggered_by="schedule", trigger_key=f"k{version}",
        snapshot_date=date(2026, 11, 26), source={"kind": "test"}, source_offsets={"T": {"0": version}},
        row_count=version, owner="o", lake_staging_path=None,
        lake_path=f"tables/t/version=v{version}" if published else None, created_at=moment,
        completed_at=moment, published_at=moment if published else None, error=None,
    )


def test_catalog_and_latest_name_the_newest_complete_published_version(tmp_path):
    storage = LocalStorage(tmp_path, fsync=False)
    for version in (1, 2):
        (tmp_path / f"tables/t/version=v{version}").mkdir(parents=True)
        pq.write_table(pa.table({"a": [1] * version}), tmp_path / f"tables/t/version=v{version}/part-00000.parquet")
    versions = [_info(1, "complete", True), _info(2, "complete", True), _info(3, "complete", False), _info(4, "failed", False)]
    document = write_table_catalog(storage, "t", pa.schema([("a", pa.int64())]), versions)
    assert document["latest_version"] == 2
    latest = read_latest(storage, "t")
    assert latest["files"] == ["tables/t/version=v2/part-00000.parquet"] and latest["source_offsets"] == {"T": {"0": 2}}
    stored = json.loads((tmp_path / "_txlake/catalog/tables/t.json").read_text())
    assert [v["status"] for v in stored["versions"]] == ["complete", "complete", "complete", "failed"]
    assert stored["versions"][1]["file_count"] == 1 and stored["versions"][1]["bytes"] > 0
    assert "file_count" not in stored["versions"][2]  # committed, not yet readable in the lake
    write_table_catalog(storage, "t", pa.schema([("a", pa.int64())]), [_info(4, "failed", False)])
    assert read_latest(storage, "t") is None


def test_stream_datasets_are_described_by_listing(tmp_path):
    storage = LocalStorage(tmp_path, fsync=False)
    for day, rows in ((24, 3), (25, 1)):
        folder = tmp_path / f"streams/s/year=2026/month=11/day={day}"
        folder.mkdir(parents=True)
        pq.write_table(pa.table({"id": list(range(rows))}), folder / "s+0+0.parquet")
    (tmp_path / "streams/s/year=2026/month=11/day=25/ignored.tmp").write_bytes(b"x")
    described = describe_dataset(storage, "streams/s")
    assert sorted(described["partitions"]) == ["year=2026/month=11/day=24", "year=2026/month=11/day=25"]
    assert described["file_count"] == 2 and described["schema"] == [{"name": "id", "type": "int64", "nullable": True}]
    assert list_datasets(storage) == [
        {"dataset": "streams/s", "kind": "stream", "file_count": 2, "bytes": described["bytes"], "partitions": 2,
         "compacted_days": 0}
    ]
    with pytest.raises(KeyError):
        describe_dataset(storage, "streams/nothing")
    with pytest.raises(KeyError):
        describe_dataset(storage, "elsewhere")


def test_render_helpers():
    assert human_bytes(None) == "-" and human_bytes(512) == "512 B" and human_bytes(1536) == "1.5 KiB"
    assert table(("a", "bb"), [(1, None), ("long", "x")]).splitlines() == ["a     bb", "1     -", "long  x"]


def test_catalog_is_current_until_a_version_changes_state(tmp_path):
    storage = LocalStorage(tmp_path, fsync=False)
    versions = [_info(1, "complete", False)]
    assert not catalog_is_current(storage, "t", versions)  # nothing stored yet
    write_table_catalog(storage, "t", pa.schema([("a", pa.int64())]), versions)
    assert catalog_is_current(storage, "t", versions)
    assert not catalog_is_current(storage, "t", [_info(1, "complete", True)])
    assert not catalog_is_current(storage, "t", [*versions, _info(2, "failed", False)])
