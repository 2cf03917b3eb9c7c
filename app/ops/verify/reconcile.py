"""The pure part of ``txlake verify``: offsets in, findings out (no I/O, unit-tested).

For one (feed, topic, partition) the caller gathers what each side holds -- the lake's
offsets (one entry per visible row), the dead-letter topic's offsets (one per dead letter),
the ledgers and Kafka's positions -- and :func:`reconcile_partition` decides:

* every offset in ``[log_start, checked_through]`` is in the lake exactly once or in the
  dead-letter topic (``missing`` otherwise);
* no offset is in the lake twice (``duplicated``), nor in the lake *and* the dead-letter
  topic (``both``);
* no row is visible above the lake's ledger (``beyond_ledger``: a commit-protocol breach);
* the consumer group never committed past what the sinks hold (``committed_ahead``).

A dead letter published more than once is tolerated (the dead-letter topic is at least
once, see :mod:`app.core.dead_letters`) and only counted (``dead_letter_repeats``).

On a topic written with Kafka transactions some offsets hold no record a consumer ever
receives (commit and abort markers, records of aborted transactions): the caller passes them
as ``non_records`` and they count neither as missing nor as a commit ahead of the sinks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["PartitionFindings", "PartitionPositions", "offset_ranges", "reconcile_partition"]


@dataclass(frozen=True)
class PartitionPositions:
    """Where each side stands for one partition. Offsets are inclusive; -1 means nothing."""

    log_start: int  # Kafka's first offset still in the log
    last_offset: int  # Kafka's last offset (end offset - 1)
    committed: int | None  # the consumer group's committed position (next offset to read); None: no commit
    lake_through: int  # the lake ledger's landed_through
    warehouse_through: int | None  # the warehouse ledger's landed_through; None: the feed has no warehouse

    @property
    def checked_through(self) -> int:
        """The highest offset that must have landed: what the sinks or the group claim to hold."""
        claims = [self.lake_through]
        if self.warehouse_through is not None:
            claims.append(self.warehouse_through)
        if self.committed is not None:
            claims.append(self.committed - 1)
        return min(max(claims), self.last_offset)


@dataclass
class PartitionFindings:
    """What :func:`reconcile_partition` found for one partition (ranges are inclusive pairs)."""

    feed: str
    topic: str
    partition: int
    positions: PartitionPositions
    checked: int = 0  # offsets checked
    in_lake: int = 0
    in_dead_letters: int = 0
    missing: list[tuple[int, int]] = field(default_factory=list)
    duplicated: list[tuple[int, int]] = field(default_factory=list)
    both: list[tuple[int, int]] = field(default_factory=list)
    beyond_ledger: list[tuple[int, int]] = field(default_factory=list)
    committed_ahead: bool = False
    dead_letter_repeats: int = 0
    non_records: int = 0  # offsets in the checked range that hold no record (transaction markers, aborted)
    missing_dimension_keys: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (
            self.missing
            or self.duplicated
            or self.both
            or self.beyond_ledger
            or self.committed_ahead
            or any(self.missing_dimension_keys.values())
        )

    def to_json(self) -> dict:
        p = self.positions
        return {
            "feed": self.feed,
            "topic": self.topic,
            "partition": self.partition,
            "ok": self.ok,
            "log_start": p.log_start,
            "last_offset": p.last_offset,
            "committed": p.committed,
            "lake_landed_through": p.lake_through,
            "warehouse_landed_through": p.warehouse_through,
            "checked_through": p.checked_through,
            "checked": self.checked,
            "in_lake": self.in_lake,
            "in_dead_letters": self.in_dead_letters,
            "missing": [list(r) for r in self.missing],
            "duplicated": [list(r) for r in self.duplicated],
            "in_lake_and_dead_letters": [list(r) for r in self.both],
            "beyond_lake_ledger": [list(r) for r in self.beyond_ledger],
            "committed_ahead_of_sinks": self.committed_ahead,
            "dead_letter_repeats": self.dead_letter_repeats,
            "non_record_offsets": self.non_records,
            "missing_dimension_keys": self.missing_dimension_keys,
        }


def offset_ranges(offsets: np.ndarray) -> list[tuple[int, int]]:
    """Sorted unique offsets folded into inclusive ``(first, last)`` runs."""
    if offsets.size == 0:
        return []
    values = np.unique(offsets)
    breaks = np.flatnonzero(np.diff(values) != 1)
    starts = np.concatenate(([values[0]], values[breaks + 1]))
    ends = np.concatenate((values[breaks], [values[-1]]))
    return [(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


def reconcile_partition(
    feed: str,
    topic: str,
    partition: int,
    positions: PartitionPositions,
    lake_offsets: np.ndarray,
    dead_letter_offsets: np.ndarray,
    non_records: np.ndarray | None = None,
) -> PartitionFindings:
    """Compare one partition's lake rows and dead letters with its positions (see the module docstring).

    ``lake_offsets`` has one entry per visible lake row of the partition (any order, repeats
    kept: a repeat is a duplicate); ``dead_letter_offsets`` one per dead letter; ``non_records``
    the offsets known to hold no record (transaction markers, aborted records).
    """
    findings = PartitionFindings(feed, topic, partition, positions)
    lake = np.asarray(lake_offsets, dtype=np.int64)
    dead = np.asarray(dead_letter_offsets, dtype=np.int64)
    gaps = np.zeros(0, np.int64) if non_records is None else np.unique(np.asarray(non_records, dtype=np.int64))
    findings.beyond_ledger = offset_ranges(lake[lake > positions.lake_through])
    lake = lake[lake <= positions.lake_through]

    low, high = positions.log_start, positions.checked_through
    if positions.committed is not None:
        held = positions.lake_through if positions.warehouse_through is None else min(
            positions.lake_through, positions.warehouse_through
        )
        # Ahead only if a record lies between what the sinks hold and what the group committed.
        unheld = np.arange(held + 1, positions.committed, dtype=np.int64)
        findings.committed_ahead = bool(np.setdiff1d(unheld, gaps, assume_unique=True).size)

    # Duplicates anywhere in the lake (below the log start too: those rows are still readable).
    ordered = np.sort(lake)
    repeated = ordered[1:][np.diff(ordered) == 0]
    findings.duplicated = offset_ranges(repeated)
    findings.dead_letter_repeats = int(dead.size - np.unique(dead).size)

    if high < low:
        return findings
    size = high - low + 1
    lake_in = lake[(lake >= low) & (lake <= high)] - low
    dead_in = np.unique(dead[(dead >= low) & (dead <= high)]) - low
    lake_count = np.bincount(lake_in, minlength=size) if size else np.zeros(0, np.int64)
    dead_hit = np.zeros(size, dtype=bool)
    dead_hit[dead_in] = True
    no_record = np.zeros(size, dtype=bool)
    no_record[gaps[(gaps >= low) & (gaps <= high)] - low] = True
    findings.non_records = int(np.count_nonzero(no_record))
    findings.checked = size - findings.non_records
    findings.in_lake = int(np.count_nonzero(lake_count))
    findings.in_dead_letters = int(np.count_nonzero(dead_hit))
    findings.missing = offset_ranges(np.flatnonzero((lake_count == 0) & ~dead_hit & ~no_record) + low)
    findings.both = offset_ranges(np.flatnonzero((lake_count > 0) & dead_hit) + low)
    return findings
