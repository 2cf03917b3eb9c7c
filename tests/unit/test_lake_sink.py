"""The lake sink's commit protocol: day partitioning, idempotent replays, crash recovery."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pyarrow.dataset as ds
import pytest

import app.lake.ledger as ledger_module
from app.core.feeds import Feed
from app.core.sink import Batch
from app.lake.ledger import read_landed_through
from app.lake.sink import LakeSink, split_by_day
from tools.loadgen import generate

FEED = Feed(name="transaction_stream", topic="tx", record="transaction", dataset="streams/transaction_stream")
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _batch(records, first_offset: int = 0, partition: int = 0) -> Batch:
    offsets = list(range(first_offset, first_offset + len(records)))
    return Batch(FEED, partition, offsets[0], offsets[-1], records, offsets)


def _visible(root) -> "ds.Dataset":
    return ds.dataset(root / FEED.dataset, format="parquet", partitioning="hive").to_table()


@pytest.fixture
def records():
    return list(generate(300, seed=3, now=NOW, days=3, late_fraction=0.1))


async def test_a_batch_spanning_days_lands_one_file_per_day(tmp_path, records):
    sink = LakeSink(tmp_path)
    assert await sink.write(_batch(records)) == len(records)
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("streams/**/*.parquet"))
    days = {(r.event_timestamp.year, r.event_timestamp.month, r.event_timestamp.day) for r in records}
    assert len(files) == len(days) >= 3
    for path in files:
        assert path.startswith("streams/transaction_stream/year=")
        assert path.endswith(".parquet") and "/tx+0+" in path
    table = _visible(tmp_path)
    assert table.num_rows == len(records)
    assert sorted(table.column("_kafka_offset").to_pylist()) == list(range(len(records)))
    columns = (table.column(c).to_pylist() for c in ("year", "month", "day", "event_timestamp"))
    for year, month, day, ts in zip(*columns, strict=True):
        assert (ts.year, ts.month, ts.day) == (year, month, day)
    assert read_landed_through(tmp_path, FEED.dataset, "tx", 0) == len(records) - 1


async def test_replays_are_skipped_and_overlaps_land_only_the_new_part(tmp_path, records):
    sink = LakeSink(tmp_path)
    await sink.write(_batch(records[:200]))
    assert await sink.write(_batch(records[:200])) == 0
    assert await sink.write(_batch(records[100:], first_offset=100)) == 100
    table = _visible(tmp_path)
    assert sorted(table.column("_kafka_offset").to_pylist()) == list(range(300))
    # A fresh sink (a restarted worker) knows what the lake holds.
    restarted = LakeSink(tmp_path)
    assert await restarted.write(_batch(records)) == 0
    assert _visible(tmp_path).num_rows == 300


async def test_a_batch_of_only_dead_letters_advances_the_ledger(tmp_path):
    sink = LakeSink(tmp_path)
    assert await sink.write(Batch(FEED, 0, 0, 4, [], [])) == 0
    assert read_landed_through(tmp_path, FEED.dataset, "tx", 0) == 4
    assert not list(tmp_path.glob("streams/**/*.parquet"))


async def test_crash_after_the_commit_point_is_rolled_forward(tmp_path, records, monkeypatch):
    sink = LakeSink(tmp_path)
    real_replace = __import__("os").replace
    calls = {"n": 0}

    def crash_after_first_move(src, dst):
        # Let the ledger rename through, then die after the first data file's rename.
        if str(src).endswith(".parquet.tmp"):
            calls["n"] += 1
            if calls["n"] == 2:
                raise SystemExit("killed between two renames")
        return real_replace(src, dst)

    monkeypatch.setattr("app.lake.storage.os.replace", crash_after_first_move)
    with pytest.raises(SystemExit):
        sink.write_sync(_batch(records))
    monkeypatch.undo()
    # Half of the batch's days are visible now; the ledger already says the batch is committed.
    assert read_landed_through(tmp_path, FEED.dataset, "tx", 0) == len(records) - 1
    assert len(list(tmp_path.glob("streams/**/*.parquet"))) == 1

    restarted = LakeSink(tmp_path)
    assert await restarted.write(_batch(records)) == 0  # recovery rolled forward, the replay is skipped
    table = _visible(tmp_path)
    assert sorted(table.column("_kafka_offset").to_pylist()) == list(range(len(records)))
    assert not list(tmp_path.glob("_txlake/staging/**/*.tmp"))


async def test_crash_before_the_commit_point_leaves_nothing_visible(tmp_path, records, monkeypatch):
    sink = LakeSink(tmp_path)
    await sink.write(_batch(records[:100]))

    def die(*_args, **_kwargs):
        raise SystemExit("killed before the ledger was written")

    monkeypatch.setattr("app.lake.ledger._write_durably", die)
    with pytest.raises(SystemExit):
        sink.write_sync(_batch(records[100:], first_offset=100))
    monkeypatch.undo()
    assert list(tmp_path.glob("_txlake/staging/**/*.tmp")), "staged files exist but are invisible"
    assert _visible(tmp_path).num_rows == 100
    assert read_landed_through(tmp_path, FEED.dataset, "tx", 0) == 99

    restarted = LakeSink(tmp_path, staging_grace_s=0)  # the crashed writer's files are old enough
    assert await restarted.write(_batch(records[100:], first_offset=100)) == 200
    assert not list(tmp_path.glob("_txlake/staging/**/*.tmp"))
    assert sorted(_visible(tmp_path).column("_kafka_offset").to_pylist()) == list(range(300))


async def test_partitions_have_independent_ledgers(tmp_path, records):
    sink = LakeSink(tmp_path)
    await sink.write(_batch(records[:50], partition=0))
    await sink.write(_batch(records[50:80], partition=1))
    assert read_landed_through(tmp_path, FEED.dataset, "tx", 0) == 49
    assert read_landed_through(tmp_path, FEED.dataset, "tx", 1) == 29
    assert _visible(tmp_path).num_rows == 80


def test_split_by_day_uses_utc_event_time(records):
    from models.arrow import RECORD_KINDS

    edge = [
        records[0].model_copy(update={"event_timestamp": datetime(2026, 11, 24, 23, 59, 59, 999000, tzinfo=UTC)}),
        records[1].model_copy(update={"event_timestamp": datetime(2026, 11, 25, 0, 0, tzinfo=UTC)}),
        records[2].model_copy(update={"event_timestamp": datetime(2026, 11, 24, 23, 0, tzinfo=UTC) + timedelta(minutes=30)}),
    ]
    table = RECORD_KINDS["transaction"].to_table(edge, [0, 0, 0], [0, 1, 2])
    days = [(day.path, rows.column("_kafka_offset").to_pylist()) for day, rows in split_by_day(table)]
    assert days == [("year=2026/month=11/day=24", [0, 2]), ("year=2026/month=11/day=25", [1])]


async def test_an_unwritable_lake_is_a_transient_error(tmp_path, records):
    from app.core.errors import LakeSinkError

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    sink = LakeSink(blocker / "lake")
    with pytest.raises(LakeSinkError):
        await sink.write(_batch(records[:10]))


async def test_recovery_spares_the_young_staged_files_of_a_writer_still_landing(tmp_path, records, monkeypatch):
    """A rebalance: the new owner recovers the partition while the old owner is between staging and
    its commit point. The old owner's staged files must survive, or its committed ledger would point
    at nothing (records lost)."""
    old_owner, new_owner = LakeSink(tmp_path), LakeSink(tmp_path)
    await old_owner.write(_batch(records[:100]))
    real_write = ledger_module._write_durably

    def recover_elsewhere_then_commit(storage, path, data):
        assert asyncio.run(new_owner.position(FEED, 0)) == 99  # the new owner's recovery runs now
        real_write(storage, path, data)

    monkeypatch.setattr(ledger_module, "_write_durably", recover_elsewhere_then_commit)
    assert await old_owner.write(_batch(records[100:], first_offset=100)) == 200
    assert sorted(_visible(tmp_path).column("_kafka_offset").to_pylist()) == list(range(300))


async def test_a_write_that_fails_midway_leaves_no_staged_file(tmp_path, records, monkeypatch):
    """Disk full on the second day file: the attempt removes what it staged; the retry lands it all."""
    import errno

    sink = LakeSink(tmp_path)
    real_write = sink.storage.write_parquet
    calls = {"n": 0}

    def full_disk_on_second_file(path, rows, compression):
        calls["n"] += 1
        real_write(path, rows, compression)  # a file is (partly) on disk when the error comes
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sink.storage, "write_parquet", full_disk_on_second_file)
    with pytest.raises(Exception, match="No space left"):
        await sink.write(_batch(records))
    assert not list(tmp_path.glob("_txlake/staging/**/*.tmp"))
    assert read_landed_through(tmp_path, FEED.dataset, "tx", 0) == -1
    monkeypatch.undo()
    assert await sink.write(_batch(records)) == len(records)
    assert sorted(_visible(tmp_path).column("_kafka_offset").to_pylist()) == list(range(len(records)))
