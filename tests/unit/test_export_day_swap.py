"""The per-day exchange of a stream export beside the streaming lake sink (real files, no services)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.exports.day_swap import ExportDaySwap, cut_of, recover_work, work_root
from app.exports.request import ExportRequest
from app.lake.day_swap import DaySwap
from app.lake.ledger import LedgerEntry
from app.lake.sink import DayPartition

DATASET, TOPIC = "streams/s", "tx"
DAY = DayPartition(2026, 11, 24)


def _file(directory: Path, partition: int, start: int, content: str = "old") -> str:
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{TOPIC}+{partition}+{start:020d}.parquet"
    (directory / name).write_text(content)
    return name


def _swap(root: Path, cut: dict[int, int]) -> ExportDaySwap:
    work = work_root(root, DATASET) / "e1"
    return ExportDaySwap.for_export(root, DATASET, TOPIC, cut, work)


def test_files_at_or_below_the_cut_are_replaced_newer_ones_kept(tmp_path: Path) -> None:
    swap = _swap(tmp_path, {0: 99, 1: 49})
    live = swap.live(DAY)
    replaced = [_file(live, 0, 0), _file(live, 0, 50), _file(live, 1, 0)]
    kept = [_file(live, 0, 100), _file(live, 1, 50)]
    (live / "README.txt").write_text("not ours")
    staged = tmp_path / "staged.parquet"
    staged.write_text("new")
    compacted = "compacted-20261125T000000Z-abcdef-00000.parquet"
    (live / compacted).write_text("compacted before the export took the lock: at or below the cut")
    counts = swap.apply_export(DAY, [(staged, f"{TOPIC}+0+{0:020d}.parquet")])
    assert counts == {"written": 1, "kept": 3, "replaced": 4}
    assert json.loads((swap.work / "journal.json").read_text())["days"] == {DAY.path: "done"}
    assert sorted(p.name for p in live.iterdir()) == sorted([f"{TOPIC}+0+{0:020d}.parquet", *kept, "README.txt"])
    assert (live / f"{TOPIC}+0+{0:020d}.parquet").read_text() == "new"
    assert replaced[1] not in {p.name for p in live.iterdir()}
    assert not swap.assembled(DAY).exists()


def test_a_file_the_sink_moves_in_during_the_exchange_is_kept(tmp_path: Path) -> None:
    swap = _swap(tmp_path, {0: 99})
    live = swap.live(DAY)
    _file(live, 0, 0)
    original_apply = DaySwap.apply

    # Simulate the sink's rename landing in the old directory right after the exchange.
    def apply_with_race(self: DaySwap, day: DayPartition, files: list[tuple[Path, str]]) -> dict[str, int]:
        real_settle = self.settle

        def settle(day: DayPartition) -> None:
            _file(self.assembled(day), 0, 100, "landed during the swap")  # the old dir, after the exchange
            real_settle(day)

        self.settle = settle  # type: ignore[method-assign]
        return original_apply(self, day, files)

    apply_with_race(swap, DAY, [])
    assert [p.name for p in live.iterdir()] == [f"{TOPIC}+0+{100:020d}.parquet"]
    assert (live / f"{TOPIC}+0+{100:020d}.parquet").read_text() == "landed during the swap"


def test_a_missing_day_is_created(tmp_path: Path) -> None:
    swap = _swap(tmp_path, {0: 10})
    staged = tmp_path / "s.parquet"
    staged.write_text("new")
    swap.apply_export(DAY, [(staged, f"{TOPIC}+0+{3:020d}.parquet")])
    assert [p.name for p in swap.live(DAY).iterdir()] == [f"{TOPIC}+0+{3:020d}.parquet"]


def test_recovery_of_an_export_killed_before_its_exchange_changes_nothing(tmp_path: Path) -> None:
    swap = _swap(tmp_path, {0: 99})
    live = swap.live(DAY)
    old = _file(live, 0, 0)
    new = _file(swap.assembled(DAY), 0, 0, "new")
    swap._journal(DAY, "exchanging")  # killed right after journaling, before the exchange
    assert recover_work(tmp_path, DATASET) == 1
    assert [p.name for p in live.iterdir()] == [old] and (live / new).read_text() == "old"
    assert not (work_root(tmp_path, DATASET) / "e1").exists()


def test_recovery_after_the_exchange_keeps_the_new_day_and_strays(tmp_path: Path) -> None:
    swap = _swap(tmp_path, {0: 99})
    live = swap.live(DAY)
    _file(live, 0, 0, "new")  # the exchange happened: live holds the export's files ...
    _file(swap.assembled(DAY), 0, 0, "old")  # ... the old day sits in the work dir
    stray = _file(swap.assembled(DAY), 0, 120, "landed during the swap")
    swap._journal(DAY, "exchanging")
    recover_work(tmp_path, DATASET)
    assert sorted(p.name for p in live.iterdir()) == sorted([f"{TOPIC}+0+{0:020d}.parquet", stray])
    assert (live / f"{TOPIC}+0+{0:020d}.parquet").read_text() == "new"


def test_the_cut_finishes_the_moves_the_ledger_records(tmp_path: Path) -> None:
    staged = tmp_path / "_txlake" / "staging" / "x.parquet.tmp"
    staged.parent.mkdir(parents=True)
    staged.write_text("committed, not yet moved")
    final = f"{DATASET}/{DAY.path}/{TOPIC}+1+{5:020d}.parquet"
    ledger = tmp_path / "_txlake" / "ledger" / DATASET / TOPIC / "1.json"
    ledger.parent.mkdir(parents=True)
    ledger.write_bytes(LedgerEntry(9, (("_txlake/staging/x.parquet.tmp", final),)).to_json())
    assert cut_of(tmp_path, DATASET, TOPIC) == {1: 9}
    assert (tmp_path / final).read_text() == "committed, not yet moved" and not staged.exists()


@pytest.mark.parametrize("body, message", [
    ({"source": "T", "kind": "stream"}, "needs a range"),
    ({"source": "T", "kind": "table", "range": {"from_day": "2026-01-01", "to_day": "2026-01-02"}}, "takes no range"),
    ({"source": "T", "kind": "stream", "range": {"from_day": "2026-01-02", "to_day": "2026-01-01"}}, "before"),
    ({"source": "T", "kind": "stream", "range": {"from_day": "2024-01-01", "to_day": "2026-01-01"}}, "at most"),
    ({"source": "T;DROP", "kind": "table"}, "pattern"),
    ({"source": "T", "kind": "table", "extra": 1}, "Extra inputs"),
])
def test_requests_are_validated(body: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ExportRequest.model_validate_json(json.dumps(body))
