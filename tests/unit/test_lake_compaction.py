"""Compaction of hive day partitions on a local lake (real files, no services).

The lease and the worker's schedule are tested against MariaDB in
tests/integration/test_lake_compaction.py; here the compactor runs with no fence.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from app.core.feeds import Feed
from app.core.settings import CompactionSettings, LakeSettings, Settings
from app.core.sink import Batch
from app.lake.compaction import STEPS, HiveCompactor, active_journals, is_compacted_file, list_day_files, read_day_record
from app.lake.dataset_lock import DatasetBusy, DatasetLock
from app.lake.day_lock import day_lock, move_into_day
from app.lake.ledger import LedgerEntry
from app.lake.maintenance import HiveMaintenance, is_closed
from app.lake.rewrite import OFFSETS_KEY, read_sources, rewrite_sorted
from app.lake.sink import DayPartition, LakeSink
from app.lake.storage import LocalStorage
from app.lake.view import read_stream, stream_view
from tools.loadgen import generate

FEED = Feed(name="transaction_stream", topic="tx", record="transaction", dataset="streams/transaction_stream")
DATASET = FEED.dataset
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


def _land(sink: LakeSink, records: list, partitions: int = 2, batch: int = 250, start: int = 0) -> dict[int, int]:
    """Land ``records`` round-robin over ``partitions`` in batches; returns the next offset per partition."""
    per_partition: dict[int, list] = {p: records[p::partitions] for p in range(partitions)}
    nxt = {}
    for p, mine in per_partition.items():
        for i in range(0, len(mine), batch):
            chunk = mine[i:i + batch]
            offsets = list(range(start + i, start + i + len(chunk)))
            sink.write_sync(Batch(FEED, p, offsets[0], offsets[-1], chunk, offsets))
        nxt[p] = start + len(mine)
    return nxt


def _glob(root: Path) -> pa.Table:
    return ds.dataset(root / DATASET, format="parquet", partitioning="hive").to_table()


def _positions(table: pa.Table) -> list[tuple[int, int]]:
    return sorted(zip(table.column("_kafka_partition").to_pylist(), table.column("_kafka_offset").to_pylist(), strict=True))


def _settings(root: Path, **compaction: object) -> LakeSettings:
    return LakeSettings(root=root, compaction=CompactionSettings(**compaction))


@pytest.fixture
def records() -> list:
    return list(generate(4000, seed=7, now=NOW, days=3, late_fraction=0.2))


@pytest.fixture
def landed(tmp_path: Path, records: list) -> Path:
    _land(LakeSink(tmp_path), records)
    return tmp_path


def test_a_day_becomes_one_sorted_file_with_the_same_rows(landed: Path) -> None:
    before = _glob(landed)
    compactor = HiveCompactor(LocalStorage(landed), _settings(landed))
    days = list_day_files(compactor.storage, DATASET)
    busiest = max(days, key=lambda d: len(days[d]))
    assert len(days[busiest]) >= 8
    result = compactor.compact_day(DATASET, busiest)
    assert result.status == "compacted" and result.files_after == 1 and result.replaced == len(days[busiest])
    assert result.rows == len(before.filter(
        pc.equal(pc.cast(before.column("event_timestamp"), pa.date32()), pa.scalar(busiest.date, pa.date32()))))
    after = _glob(landed)
    assert _positions(after) == _positions(before)  # every row once, nothing else
    assert after.sort_by([("_kafka_partition", "ascending"), ("_kafka_offset", "ascending")]).equals(
        before.sort_by([("_kafka_partition", "ascending"), ("_kafka_offset", "ascending")]))
    live = [f.name for f in compactor.day_files(DATASET, busiest)]
    assert len(live) == 1 and is_compacted_file(live[0])
    path = landed / DATASET / busiest.path / live[0]
    stamps = pq.read_table(path, columns=["event_timestamp"]).column(0)
    assert stamps.to_pylist() == sorted(stamps.to_pylist())
    offsets = json.loads(pq.ParquetFile(path).metadata.metadata[OFFSETS_KEY.encode()])
    assert sum(n for _lo, _hi, n in offsets.values()) == result.rows
    record = read_day_record(compactor.storage, DATASET, busiest)
    assert record is not None and record["last"]["before"]["files"] == result.files_before
    assert record["last"]["after"] == {"files": 1, "bytes": result.bytes_after}
    assert not active_journals(compactor.storage, DATASET)
    assert not list((landed / "_txlake" / "compaction" / "work").rglob("*.parquet"))


def test_target_size_splits_a_day_into_sorted_files(landed: Path) -> None:
    day, files = max(list_day_files(LocalStorage(landed), DATASET).items(), key=lambda kv: sum(f.size for f in kv[1]))
    target = sum(f.size for f in files) // 8  # sorted rows compress about 2x better: ~4 files
    compactor = HiveCompactor(LocalStorage(landed), _settings(landed, target_file_bytes=target))
    before = _positions(_glob(landed))
    result = compactor.compact_day(DATASET, day)
    assert result.written >= 3
    files = sorted(compactor.day_files(DATASET, day), key=lambda f: f.name)
    assert all(f.size < target * 1.5 for f in files)
    ranges = [pq.read_table(landed / DATASET / day.path / f.name, columns=["event_timestamp"]).column(0) for f in files]
    for first, second in zip(ranges, ranges[1:], strict=False):  # neighbouring files
        assert pc.max(first).as_py() <= pc.min(second).as_py()
    assert _positions(_glob(landed)) == before


def test_a_day_larger_than_the_memory_budget_is_sorted_in_ranges(tmp_path: Path, records: list) -> None:
    _land(LakeSink(tmp_path), records, batch=100)
    storage = LocalStorage(tmp_path)
    day = max(list_day_files(storage, DATASET).items(), key=lambda kv: len(kv[1]))[0]
    sources = read_sources(storage, [f"{DATASET}/{day.path}/{f.name}" for f in list_day_files(storage, DATASET)[day]])
    common = dict(sort_columns=("event_timestamp",), target_bytes=10**9, compression="snappy")
    storage.makedirs("one")
    storage.makedirs("many")
    one = rewrite_sorted(storage, sources, "one", lambda i: f"{i}.parquet", memory_bytes=10**9, **common)
    many = rewrite_sorted(storage, sources, "many", lambda i: f"{i}.parquet", memory_bytes=sum(s.arrow_bytes for s in sources) // 3, **common)
    assert len(one) == len(many) == 1
    assert pq.read_table(tmp_path / "one" / "0.parquet").equals(pq.read_table(tmp_path / "many" / "0.parquet"))


def test_files_of_different_schemas_are_merged_by_name(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    day_dir = tmp_path / DATASET / "year=2026/month=11/day=25"
    day_dir.mkdir(parents=True)
    ts = pa.array([datetime(2026, 11, 25, h, tzinfo=UTC) for h in (3, 1)], pa.timestamp("us", "UTC"))
    pq.write_table(pa.table({"event_timestamp": ts, "_kafka_partition": [0, 0], "_kafka_offset": [0, 1]}),
                   day_dir / "tx+0+00000000000000000000.parquet")
    pq.write_table(pa.table({"event_timestamp": ts, "_kafka_partition": [0, 0], "_kafka_offset": [2, 3],
                             "added": ["a", "b"]}), day_dir / "tx+0+00000000000000000002.parquet")
    result = HiveCompactor(storage, _settings(tmp_path)).compact_day(DATASET, DayPartition(2026, 11, 25))
    assert result.rows == 4
    table = _glob(tmp_path)
    assert table.column("added").to_pylist() == [None, "b", None, "a"]
    assert table.column("_kafka_offset").to_pylist() == [1, 3, 0, 2]


def test_a_day_with_too_few_small_files_is_left_alone(tmp_path: Path, records: list) -> None:
    _land(LakeSink(tmp_path), records[:10], partitions=1, batch=1000)
    compactor = HiveCompactor(LocalStorage(tmp_path), _settings(tmp_path))
    for day in list_day_files(compactor.storage, DATASET):
        result = compactor.compact_day(DATASET, day)
        assert result.status == "skipped" and "min_files" in result.reason


def test_a_file_still_being_moved_in_is_not_compacted(landed: Path) -> None:
    storage = LocalStorage(landed)
    compactor = HiveCompactor(storage, _settings(landed))
    day, files = max(list_day_files(storage, DATASET).items(), key=lambda kv: len(kv[1]))
    victim = next(f.name for f in files if f.name.startswith("tx+1+"))
    # The ledger of partition 1 records a move to `victim` whose staged source still exists
    # (an S3 copy done, its delete not yet): compacting `victim` now could let the roll-forward
    # copy it in again later.
    staged = "_txlake/staging/streams/transaction_stream/tx/1/abc-victim.tmp"
    storage.makedirs(staged.rsplit("/", 1)[0])
    (landed / staged).write_bytes((landed / DATASET / day.path / victim).read_bytes())
    ledger = landed / "_txlake/ledger" / DATASET / "tx" / "1.json"
    entry = LedgerEntry.from_json(ledger.read_bytes())
    ledger.write_bytes(LedgerEntry(entry.landed_through, ((staged, f"{DATASET}/{day.path}/{victim}"),)).to_json())
    assert victim not in {f.name for f in compactor.candidates(DATASET, day, files)}
    compactor.compact_day(DATASET, day)
    assert victim in {f.name for f in compactor.day_files(DATASET, day)}


def test_a_file_landing_during_the_run_is_kept_and_counted_once(landed: Path, records: list) -> None:
    sink = LakeSink(landed)
    storage = LocalStorage(landed)
    compactor = HiveCompactor(storage, _settings(landed))
    day = max(list_day_files(storage, DATASET).items(), key=lambda kv: len(kv[1]))[0]
    late = [r.model_copy(update={"event_timestamp": datetime(day.year, day.month, day.day, 13, tzinfo=UTC)}) for r in records[:30]]
    before = len(_glob(landed))

    def land_late_event() -> None:  # runs right before the commit point, after the day was listed and rewritten
        sink.write_sync(Batch(FEED, 0, 5000, 5029, late, list(range(5000, 5030))))

    result = compactor.compact_day(DATASET, day, fence=land_late_event)
    assert result.status == "compacted"
    names = [f.name for f in compactor.day_files(DATASET, day)]
    assert f"tx+0+{5000:020d}.parquet" in names and len(names) == 2
    table = _glob(landed)
    assert len(table) == before + 30 and len(set(_positions(table))) == len(table)


def test_a_move_into_a_day_waits_for_its_exchange(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    day_path = "year=2026/month=11/day=25"
    (tmp_path / "_txlake").mkdir()
    (tmp_path / "_txlake" / "staged.tmp").write_text("late batch")
    final = f"{DATASET}/{day_path}/tx+0+00000000000000000007.parquet"
    done = threading.Event()
    with day_lock(storage, DATASET, day_path, exclusive=True):
        mover = threading.Thread(target=lambda: (move_into_day(storage, "_txlake/staged.tmp", final), done.set()))
        mover.start()
        assert not done.wait(0.3)  # the exchange holds the day: the move cannot happen meanwhile
        assert not (tmp_path / final).exists()
    mover.join(10)
    assert done.is_set() and (tmp_path / final).read_text() == "late batch"


def test_compaction_and_export_of_a_dataset_exclude_each_other(tmp_path: Path) -> None:
    settings = Settings(lake=LakeSettings(root=tmp_path), datadir=tmp_path / "faust")
    maintenance = HiveMaintenance(settings)
    with DatasetLock(settings, DATASET):  # an export of the dataset runs
        with pytest.raises(DatasetBusy), maintenance.exclusive(DATASET):
            pass
    with maintenance.exclusive(DATASET):  # a compaction runs
        assert DatasetLock(settings, DATASET).held_elsewhere()


def test_closed_days_by_idleness_or_lateness() -> None:
    day = DayPartition(2026, 11, 25)
    end = datetime(2026, 11, 26, tzinfo=UTC).timestamp()
    from app.lake.compaction import DayFile

    files = [DayFile("a", 1, end - 3600), DayFile("b", 1, end - 60)]
    assert not is_closed(day, files, now=end, idle_ms=600_000, lateness_ms=None)
    assert is_closed(day, files, now=end + 600, idle_ms=600_000, lateness_ms=None)
    assert not is_closed(day, files, now=end + 300, idle_ms=600_000, lateness_ms=3_600_000)
    files.append(DayFile("late", 1, end + 7000))
    assert is_closed(day, files, now=end + 7200, idle_ms=600_000, lateness_ms=3_600_000)
    assert not is_closed(day, files, now=end + 7200, idle_ms=600_000, lateness_ms=None)


def test_plan_lists_days_with_small_files_and_only_closed_ones_when_asked(landed: Path) -> None:
    maintenance = HiveMaintenance(Settings(lake=_settings(landed, close_idle_ms=3_600_000, close_lateness_ms=None)))
    days = maintenance.plan(DATASET)
    assert days and days == sorted(days)
    assert maintenance.plan(DATASET, closed_only=True) == []  # every file is seconds old
    assert maintenance.plan(DATASET, closed_only=True, now=time.time() + 3601) == days
    assert maintenance.plan(DATASET, days[0]) == [days[0]]


# ---------------------------------------------------------------------------------------- crashes

_RUNNER = """
import sys
from pathlib import Path
from app.core.settings import LakeSettings
from app.lake.compaction import HiveCompactor
from app.lake.storage import LocalStorage
from app.lake.sink import DayPartition
root = Path(sys.argv[1])
print(HiveCompactor(LocalStorage(root), LakeSettings(root=root)).compact_day(sys.argv[2], DayPartition.parse(sys.argv[3])))
"""


@pytest.mark.parametrize("step", STEPS)
def test_a_sigkill_at_any_step_loses_and_duplicates_nothing(landed: Path, step: str) -> None:
    storage = LocalStorage(landed)
    day = max(list_day_files(storage, DATASET).items(), key=lambda kv: len(kv[1]))[0]
    expected = _positions(_glob(landed))
    env = {**os.environ, "TXLAKE_TEST_COMPACTION_KILL_AT": step, "PYTHONPATH": str(REPO)}
    killed = subprocess.run([sys.executable, "-c", _RUNNER, str(landed), DATASET, str(day)], env=env,
                            capture_output=True, cwd=REPO, timeout=120)
    assert killed.returncode == -9, killed.stderr.decode()
    assert _positions(_glob(landed)) == expected  # a plain glob right after the kill: every row once
    assert _positions(read_stream(storage, DATASET)) == expected
    assert bool(active_journals(storage, DATASET)) == (step not in ("staged",))
    result = HiveCompactor(storage, _settings(landed)).compact_day(DATASET, day)
    assert result.recovered == (0 if step == "staged" else 1)
    assert _positions(_glob(landed)) == expected
    names = [f.name for f in HiveCompactor(storage, _settings(landed)).day_files(DATASET, day)]
    assert len(names) == 1 and is_compacted_file(names[0])
    assert not active_journals(storage, DATASET)
    assert not list((landed / "_txlake" / "compaction" / "work").rglob("*.parquet"))


# ---------------------------------------------------------------------------------------- the catalog's view


def test_a_batch_spanning_days_is_visible_to_the_view_all_at_once(tmp_path: Path, records: list, monkeypatch) -> None:
    sink = LakeSink(tmp_path)
    _land(sink, records[:1000], partitions=1, batch=500)
    storage = LocalStorage(tmp_path)
    assert stream_view(storage, DATASET).visible_through == {0: 999}
    # The next batch spans several days; the process dies after its ledger (the commit point) and
    # after moving only its first day file into place.
    batch = records[1000:1500]
    assert len({r.event_timestamp.date() for r in batch}) >= 2
    real_move = LocalStorage.move
    moves = {"n": 0}

    def move_one_then_die(self: LocalStorage, source: str, target: str) -> bool:
        if moves["n"] == 1:
            raise KeyboardInterrupt("killed between two moves")
        moves["n"] += 1
        return real_move(self, source, target)

    monkeypatch.setattr(LocalStorage, "move", move_one_then_die)
    with pytest.raises(KeyboardInterrupt):
        sink.write_sync(Batch(FEED, 0, 1000, 1499, batch, list(range(1000, 1500))))
    monkeypatch.setattr(LocalStorage, "move", real_move)
    glob = _positions(_glob(tmp_path))
    assert 1000 < len(glob) < 1500  # a plain glob sees part of the batch ...
    view = stream_view(storage, DATASET)
    assert view.landed_through == {0: 1499} and view.visible_through == {0: 999} and view.pending == {0: (999, 1499)}
    assert _positions(view.read(storage)) == [(0, o) for o in range(1000)]  # ... the view none of it
    asyncio.run(LakeSink(tmp_path).position(FEED, 0))  # the next owner's recovery rolls the moves forward
    assert _positions(read_stream(storage, DATASET)) == [(0, o) for o in range(1500)]
    assert stream_view(storage, DATASET).pending == {}


def test_the_view_and_its_sql_read_the_same_rows(landed: Path) -> None:
    import duckdb

    storage = LocalStorage(landed)
    HiveMaintenance(Settings(lake=_settings(landed))).compact(DATASET, list_day_files(storage, DATASET).popitem()[0], lambda: None)
    view = stream_view(storage, DATASET)
    table = view.read(storage)
    rows = duckdb.sql(view.sql(storage)).to_arrow_table()
    assert len(rows) == len(table) == len(_glob(landed))
    assert set(rows.column_names) >= {"year", "month", "day", "_kafka_offset"}
