"""The Delta lake sink (lake.format = "delta") on a local root: group commits, positions in the log, replays, fencing, schema merge."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable, write_deltalake

from app.core.feeds import Feed
from app.core.settings import LakeSettings
from app.core.sink import Batch
from app.lake.delta import app_id, with_day_columns
from app.lake.delta_sink import DeltaLakeSink
from app.lake.formats import lake_sink
from tools.loadgen import generate

FEED = Feed(name="transaction_stream", topic="tx", record="transaction", dataset="streams/transaction_stream")
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _settings(root: Path) -> LakeSettings:
    return LakeSettings(root=root, format="delta")


def _batch(records, first_offset: int = 0, partition: int = 0) -> Batch:
    offsets = list(range(first_offset, first_offset + len(records)))
    return Batch(FEED, partition, offsets[0], offsets[-1], records, offsets)


def _table(root: Path) -> DeltaTable:
    return DeltaTable(str(root / FEED.dataset))


def _commits(root: Path) -> list[dict]:
    """Every commit of the table's log, oldest first: {action kind: [actions]}."""
    commits = []
    for path in sorted((root / FEED.dataset / "_delta_log").glob("*.json")):
        actions: dict[str, list] = {}
        for line in path.read_text().splitlines():
            (kind, body), = json.loads(line).items()
            actions.setdefault(kind, []).append(body)
        commits.append(actions)
    return commits


@pytest.fixture
def records():
    return list(generate(800, seed=3, now=NOW, days=3, late_fraction=0.1))


def test_the_format_setting_chooses_the_sink(tmp_path):
    assert isinstance(lake_sink(_settings(tmp_path)), DeltaLakeSink)
    assert not isinstance(lake_sink(LakeSettings(root=tmp_path)), DeltaLakeSink)


async def test_partitions_that_flush_together_land_in_one_commit_with_one_app_transaction_each(tmp_path, records):
    sink = DeltaLakeSink(_settings(tmp_path))
    batches = [_batch(records[p * 200:(p + 1) * 200], first_offset=1000 * p, partition=p) for p in range(4)]
    # The agent's lanes: every partition writes at once.
    assert await asyncio.gather(*(sink.write(b) for b in batches)) == [200] * 4
    commits = _commits(tmp_path)
    assert len(commits) == 1, [list(c) for c in commits]
    assert {(t["appId"], t["version"]) for t in commits[0]["txn"]} == {(app_id("tx", p), 1000 * p + 199) for p in range(4)}
    table = _table(tmp_path)
    assert table.metadata().partition_columns == ["year", "month", "day"]
    assert table.metadata().configuration["delta.checkpointInterval"] == "10"
    rows = table.to_pyarrow_table()
    assert rows.num_rows == 800
    columns = (rows.column(c).to_pylist() for c in ("year", "month", "day", "event_timestamp"))
    for year, month, day, ts in zip(*columns, strict=True):
        assert (year, month, day) == (f"{ts.year:04d}", f"{ts.month:02d}", f"{ts.day:02d}")
    # Directories stay year=YYYY/month=MM/day=DD (zero-padded strings), files are Delta's part-… names.
    files = [Path(f).relative_to(tmp_path / FEED.dataset) for f in table.file_uris()]
    assert files and all(f.parts[0].startswith("year=20") and len(f.parts[1]) == len("month=MM") for f in files)
    assert all(f.name.startswith("part-") for f in files)
    ledger = DeltaLakeSink(_settings(tmp_path)).ledger  # what txlake progress reads
    assert [await ledger.read(FEED, p) for p in range(5)] == [199, 1199, 2199, 3199, -1]


async def test_replays_land_nothing_and_overlaps_land_only_the_new_records(tmp_path, records):
    sink = DeltaLakeSink(_settings(tmp_path))
    assert await sink.write(_batch(records[:300])) == 300
    assert await sink.write(_batch(records[:300])) == 0
    assert await sink.write(_batch(records[200:500], first_offset=200)) == 200
    assert len(_commits(tmp_path)) == 2  # the replay committed nothing
    # A restarted worker reads its position from the log: the replay is skipped again.
    restarted = DeltaLakeSink(_settings(tmp_path))
    assert await restarted.position(FEED, 0) == 499
    assert await restarted.write(_batch(records[:600])) == 100
    offsets = _table(tmp_path).to_pyarrow_table(columns=["_kafka_offset"]).column(0).to_pylist()
    assert sorted(offsets) == list(range(600))


async def test_a_batch_of_dead_letters_only_moves_the_position(tmp_path, records):
    sink = DeltaLakeSink(_settings(tmp_path))
    await sink.write(_batch(records[:10]))
    empty = Batch(FEED, 0, 10, 19, (), ())  # offsets 10..19 all went to the dead-letter topic
    assert await sink.write(empty) == 0
    assert _commits(tmp_path)[-1].keys() == {"commitInfo", "txn"}
    assert await DeltaLakeSink(_settings(tmp_path)).position(FEED, 0) == 19
    assert _table(tmp_path).count() == 10


async def test_a_stale_writer_of_the_same_partition_is_fenced_by_the_log(tmp_path, records):
    """Two workers believe they own partition 0 (a rebalance moved it): nothing lands twice."""
    first, second = DeltaLakeSink(_settings(tmp_path)), DeltaLakeSink(_settings(tmp_path))
    assert await first.write(_batch(records[:100])) == 100
    assert await second.position(FEED, 0) == 99  # second takes the partition over at this version
    await second.write(_batch(records[100:150], first_offset=100))
    assert await first.write(_batch(records[100:300], first_offset=100)) == 150  # first's view was stale
    assert await second.write(_batch(records[150:300], first_offset=150)) == 0  # and now second's is
    offsets = _table(tmp_path).to_pyarrow_table(columns=["_kafka_offset"]).column(0).to_pylist()
    assert sorted(offsets) == list(range(300))


async def test_conflicting_commits_from_another_process_view_are_detected_not_duplicated(tmp_path, records):
    """The committer's own table version is behind: delta-rs refuses the commit on the app id, the sink reloads."""
    sink = DeltaLakeSink(_settings(tmp_path))
    await sink.write(_batch(records[:100]))
    # Another writer (same app id) commits offsets 100..199 behind this sink's back.
    rows = with_day_columns(FEED.record_kind.to_table(records[100:200], [0] * 100, list(range(100, 200))))
    from deltalake import CommitProperties, Transaction

    write_deltalake(str(tmp_path / FEED.dataset), rows, mode="append",
                    commit_properties=CommitProperties(app_transactions=[Transaction(app_id("tx", 0), 199)]))
    assert await sink.write(_batch(records[100:300], first_offset=100)) == 100
    offsets = _table(tmp_path).to_pyarrow_table(columns=["_kafka_offset"]).column(0).to_pylist()
    assert sorted(offsets) == list(range(300))


async def test_a_checkpoint_every_ten_commits(tmp_path, records):
    sink = DeltaLakeSink(_settings(tmp_path))
    for n in range(12):
        await sink.write(_batch(records[n * 10:(n + 1) * 10], first_offset=n * 10))
    log = tmp_path / FEED.dataset / "_delta_log"
    # delta-rs checkpoints after every tenth commit: versions 0..9, so at version 9.
    assert [p.name for p in log.glob("*.checkpoint.parquet")] == [f"{9:020d}.checkpoint.parquet"]
    assert json.loads((log / "_last_checkpoint").read_text())["version"] == 9
    assert _table(tmp_path).transaction_version(app_id("tx", 0)) == 119  # kept by the checkpoint


async def test_added_columns_merge_into_the_table_schema(tmp_path, records):
    """A table written by an older txlake (no ``status`` column) takes the new column; old rows read null."""
    old = with_day_columns(FEED.record_kind.to_table(records[:50], [0] * 50, list(range(50)))).drop_columns(["status"])
    write_deltalake(str(tmp_path / FEED.dataset), old, partition_by=["year", "month", "day"], mode="append")
    sink = DeltaLakeSink(_settings(tmp_path))
    assert await sink.write(_batch(records[50:100], first_offset=50)) == 50
    table = _table(tmp_path)
    assert "status" in table.schema().to_arrow().names
    rows = table.to_pyarrow_table(columns=["_kafka_offset", "status"]).sort_by("_kafka_offset")
    assert rows.column("status").null_count == 50
    assert rows.filter(pc.greater_equal(rows.column("_kafka_offset"), 50)).column("status").null_count == 0
    # An older worker still running during the upgrade writes without the column: accepted, null.
    older = pa.Table.from_batches(
        with_day_columns(FEED.record_kind.to_table(records[100:110], [1] * 10, list(range(10)))).drop_columns(["status"]).to_batches()
    )
    write_deltalake(table, older, mode="append", schema_mode="merge")
    assert _table(tmp_path).count() == 110


async def test_the_readers_see_every_record_once(tmp_path, records):
    """deltalake, Polars and DuckDB (over deltalake's Arrow dataset) read the table the sink wrote."""
    import duckdb
    import polars as pl

    sink = DeltaLakeSink(_settings(tmp_path))
    await asyncio.gather(*(sink.write(_batch(records[p * 400:(p + 1) * 400], partition=p)) for p in range(2)))
    uri = str(tmp_path / FEED.dataset)
    assert DeltaTable(uri).to_pyarrow_table().num_rows == 800
    frame = pl.read_delta(uri)
    assert frame.height == 800 and frame.schema["year"] == pl.String
    assert frame.select(pl.struct("_kafka_partition", "_kafka_offset").n_unique()).item() == 800
    con = duckdb.connect()
    con.register("tx", DeltaTable(uri).to_pyarrow_dataset())
    count, days = con.execute("SELECT count(*), count(DISTINCT (year, month, day)) FROM tx").fetchone()
    assert count == 800 and days >= 3


# ------------------------------------------------------------------------------------- maintenance


def _maintenance(root: Path, **compaction):
    from app.core.settings import Settings
    from app.lake.delta_maintenance import DeltaMaintenance

    lake = _settings(root).model_copy(update={"compaction": _settings(root).compaction.model_copy(update=compaction)})
    return DeltaMaintenance(Settings(lake=lake), retention_hours=0)


async def _land_small_batches(root: Path, records, batches: int, partitions: int = 2) -> DeltaLakeSink:
    sink = DeltaLakeSink(_settings(root))
    size = len(records) // (batches * partitions)
    for n in range(batches):
        await asyncio.gather(*(
            sink.write(_batch(records[(n * partitions + p) * size:(n * partitions + p + 1) * size], first_offset=n * size, partition=p))
            for p in range(partitions)
        ))
    return sink


async def test_compacting_a_day_rewrites_it_sorted_in_one_commit_and_keeps_the_positions(tmp_path, records):
    from app.lake.delta_maintenance import day_files

    await _land_small_batches(tmp_path, records, batches=8)
    maintenance = _maintenance(tmp_path)
    assert maintenance.datasets() == [FEED.dataset]
    days = maintenance.plan(FEED.dataset)
    assert len(days) >= 3  # every day got a file from most of the 8 commits
    before = _table(tmp_path)
    positions = {p: before.transaction_version(app_id("tx", p)) for p in range(2)}
    day = days[0]
    result = maintenance.compact(FEED.dataset, day, lambda: None)
    assert result.status == "compacted" and result.files_before > 1 and result.files_after == 1, result
    after = _table(tmp_path)
    assert after.version() == before.version() + 1
    assert {p: after.transaction_version(app_id("tx", p)) for p in range(2)} == positions
    assert after.count() == before.count() == 800
    assert result.rows == sum(1 for r in records if (r.event_timestamp.year, r.event_timestamp.month, r.event_timestamp.day)
                              == (day.year, day.month, day.day))
    rows = after.to_pyarrow_table(filters=[("day", "=", f"{day.day:02d}")], columns=["event_timestamp"]).column(0)
    assert rows.to_pylist() == sorted(rows.to_pylist())  # one file, rows sorted by event time
    assert len(day_files(after)[day]) == 1
    assert day not in maintenance.plan(FEED.dataset)  # done: the next pass leaves it alone
    # Replaced files stay for readers of older versions until vacuum (retention 0 here).
    assert DeltaTable(str(tmp_path / FEED.dataset), version=before.version()).count() == 800
    counts = maintenance.vacuum(FEED.dataset, lambda: None)
    assert counts["removed_files"] == result.files_before
    assert counts["checkpoint_version"] == after.version()
    assert (tmp_path / FEED.dataset / "_delta_log" / f"{after.version():020d}.checkpoint.parquet").exists()
    assert _table(tmp_path).count() == 800


async def test_closed_only_leaves_the_days_still_receiving_files(tmp_path, records):
    await _land_small_batches(tmp_path, records, batches=4)
    maintenance = _maintenance(tmp_path, close_idle_ms=3_600_000, close_lateness_ms=None)
    assert maintenance.plan(FEED.dataset, closed_only=True) == []  # every day got a file just now
    later = datetime.now(UTC).timestamp() + 7200
    assert maintenance.plan(FEED.dataset, closed_only=True, now=later) == maintenance.plan(FEED.dataset)


async def test_the_sink_keeps_landing_while_the_table_is_optimized(tmp_path, records):
    """An optimize commit and the sink's appends interleave: nothing lost, nothing twice."""
    sink = await _land_small_batches(tmp_path, records[:400], batches=5)
    maintenance = _maintenance(tmp_path)
    optimizing = asyncio.create_task(asyncio.to_thread(maintenance.compact, FEED.dataset, None, lambda: None))
    for n in range(10):
        await asyncio.gather(*(
            sink.write(_batch(records[400 + (2 * n + p) * 20:400 + (2 * n + p + 1) * 20], first_offset=1000 + n * 20, partition=p))
            for p in range(2)
        ))
    result = await optimizing
    assert result.status == "compacted", result
    rows = _table(tmp_path).to_pyarrow_table(columns=["_kafka_partition", "_kafka_offset"])
    positions = list(zip(rows.column(0).to_pylist(), rows.column(1).to_pylist(), strict=True))
    assert len(positions) == len(set(positions)) == 800
    assert [_table(tmp_path).transaction_version(app_id("tx", p)) for p in range(2)] == [1199, 1199]


async def test_vacuum_removes_the_files_of_a_commit_that_never_happened(tmp_path, records):
    """A SIGKILL between delta-rs's data files and its log entry leaves files no version names."""
    await _land_small_batches(tmp_path, records[:200], batches=1)
    committed = next((tmp_path / FEED.dataset).glob("year=*/month=*/day=*/part-*.parquet"))
    orphan = committed.with_name("part-00000-00000000-dead-beef-0000-000000000000-c000.snappy.parquet")
    orphan.write_bytes(committed.read_bytes())
    assert _table(tmp_path).count() == 200  # Delta readers never saw it
    assert _maintenance(tmp_path).vacuum(FEED.dataset, lambda: None)["removed_files"] == 1
    assert not orphan.exists() and _table(tmp_path).count() == 200


async def test_a_stream_export_into_a_delta_lake_is_refused_clearly(tmp_path):
    from datetime import date

    from app.core.settings import Settings
    from app.exports.request import DayRange, ExportRequest
    from app.exports.run import run_export

    settings = Settings(lake=_settings(tmp_path))
    request = ExportRequest(source="TRANSACTION_STREAM", kind="stream",
                            range=DayRange(from_day=date(2026, 11, 24), to_day=date(2026, 11, 25)))
    status = await run_export(settings, request, "x1", lambda _status: None, asyncio.Event())
    assert status.state == "failed"
    assert "lake.format = delta" in " ".join(status.errors)
    assert not (tmp_path / FEED.dataset).exists()  # nothing written, ksqlDB never asked


async def test_the_report_counts_rows_per_day_from_the_log_not_a_glob(tmp_path, records):
    from collections import Counter

    from app.ops.report import lake_rows_per_day

    await _land_small_batches(tmp_path, records, batches=2)
    committed = next((tmp_path / FEED.dataset).glob("year=*/month=*/day=*/part-*.parquet"))
    committed.with_name("part-orphan.parquet").write_bytes(committed.read_bytes())  # a killed commit's file
    expected = Counter((r.event_timestamp.year, r.event_timestamp.month, r.event_timestamp.day) for r in records)
    rows = lake_rows_per_day(_settings(tmp_path), FEED)
    assert [(y, m, d, n) for y, m, d, n, _files in rows] == sorted((*day, n) for day, n in expected.items())
