"""The reconciliation rules of ``txlake verify`` on hand-made offsets."""

from __future__ import annotations

import numpy as np

from app.ops.verify.reconcile import PartitionPositions, offset_ranges, reconcile_partition


def _positions(**overrides) -> PartitionPositions:
    values = dict(log_start=0, last_offset=99, committed=100, lake_through=99, warehouse_through=None)
    values.update(overrides)
    return PartitionPositions(**values)


def _check(positions, lake, dead=()):
    return reconcile_partition("f", "t", 0, positions, np.asarray(lake, dtype=np.int64), np.asarray(dead, dtype=np.int64))


def test_ranges_fold_runs():
    assert offset_ranges(np.array([5, 1, 2, 3, 9, 10, 2])) == [(1, 3), (5, 5), (9, 10)]
    assert offset_ranges(np.array([], dtype=np.int64)) == []


def test_complete_partition_with_dead_letters_is_ok():
    findings = _check(_positions(), [o for o in range(100) if o not in (7, 50)], [7, 50, 50])
    assert findings.ok
    assert (findings.checked, findings.in_lake, findings.in_dead_letters) == (100, 98, 2)
    assert findings.dead_letter_repeats == 1  # at least once: tolerated


def test_missing_and_duplicated_are_ranges():
    lake = [o for o in range(100) if not 10 <= o <= 19 and o != 42] + [60, 61, 61]
    findings = _check(_positions(), lake)
    assert not findings.ok
    assert findings.missing == [(10, 19), (42, 42)]
    assert findings.duplicated == [(60, 61)]


def test_lake_and_dead_letter_for_the_same_offset_is_a_problem():
    findings = _check(_positions(), list(range(100)), [3])
    assert findings.both == [(3, 3)] and not findings.ok


def test_checked_up_to_the_highest_claim_and_commit_ahead_of_the_sinks():
    # The group committed 80 (next to read) but the lake holds only through 49.
    findings = _check(_positions(committed=80, lake_through=49), list(range(50)))
    assert findings.missing == [(50, 79)]
    assert findings.committed_ahead


def test_warehouse_ahead_of_the_lake_counts_as_missing_in_the_lake():
    findings = _check(_positions(committed=None, lake_through=39, warehouse_through=59), list(range(40)))
    assert findings.missing == [(40, 59)]
    assert not findings.committed_ahead


def test_rows_above_the_ledger_are_a_protocol_breach_and_lag_is_not():
    findings = _check(_positions(committed=30, lake_through=29), list(range(35)))
    assert findings.beyond_ledger == [(30, 34)]
    lagging = _check(_positions(committed=30, lake_through=29), list(range(30)))
    assert lagging.ok and lagging.checked == 30


def test_offsets_below_the_log_start_are_not_required_but_duplicates_there_count():
    findings = _check(_positions(log_start=50), list(range(60, 100)) + [1, 1])
    assert findings.missing == [(50, 59)]
    assert findings.duplicated == [(1, 1)]


def test_nothing_landed_nothing_committed_is_ok():
    findings = _check(_positions(committed=None, lake_through=-1), [])
    assert findings.ok and findings.checked == 0


def test_transaction_markers_and_aborted_records_are_neither_missing_nor_a_commit_ahead():
    # A transactional partition: records 0..9, a commit marker at 10, records 11..19 (aborted),
    # the abort marker at 20, records 21..29, the marker at 30. The group committed the
    # consumer's position (31), the lake holds every record through 29.
    records = [*range(10), *range(21, 30)]
    gaps = np.asarray([10, *range(11, 21), 30], dtype=np.int64)
    positions = _positions(last_offset=30, committed=31, lake_through=29)
    unexplained = _check(positions, records)
    assert unexplained.missing == [(10, 20), (30, 30)] and unexplained.committed_ahead
    findings = reconcile_partition("f", "t", 0, positions, np.asarray(records, dtype=np.int64), np.zeros(0, np.int64), gaps)
    assert findings.ok, findings
    assert (findings.checked, findings.non_records) == (19, 12)


def test_a_record_among_markers_is_still_missing():
    gaps = np.asarray([10, 20], dtype=np.int64)
    lake = [o for o in range(21) if o not in (10, 15, 20)]
    findings = reconcile_partition("f", "t", 0, _positions(last_offset=20, committed=21, lake_through=20),
                                   np.asarray(lake, dtype=np.int64), np.zeros(0, np.int64), gaps)
    assert findings.missing == [(15, 15)] and not findings.ok


def test_a_commit_past_a_record_the_sinks_do_not_hold_is_ahead_even_after_markers():
    gaps = np.asarray([10], dtype=np.int64)
    findings = reconcile_partition("f", "t", 0, _positions(last_offset=12, committed=12, lake_through=9),
                                   np.asarray(range(10), dtype=np.int64), np.zeros(0, np.int64), gaps)
    assert findings.committed_ahead  # offset 11 is a record above the lake's ledger
