"""``txlake verify`` for table feeds: the changelog's positions and the fact table's live rows.

A table feed's topic is a changelog (one message per change of a key, see :mod:`models.tables`);
the fact sink keeps its fact table's live rows (``snapshot_version = 0``) equal to the last value
of every key, with the ledger row in ``txlake_offset_ledger`` in the same transaction. So for
every partition :func:`reconcile_changelog` checks the positions:

* the ledger never passed Kafka's last offset (``ledger_beyond_kafka``);
* the consumer group never committed past the ledger (``committed_ahead``);
* with ``settled`` (the caller knows nothing is in flight), everything up to the last offset
  landed; otherwise offsets above the ledger are lag, not a problem (as for stream feeds).

and the live state is rebuilt from the changelog: every message from the log start up to the
ledger, in offset order, except those in the dead-letter topic, decoded with
:func:`models.tables.decode_row`; the last value per key, a tombstone removing it
(:func:`fold_changelog`). :func:`compare_live_state` compares that with the live rows: keys
missing from MySQL, keys MySQL should not hold, and measures that differ at the column's
DECIMAL scale (the expected value rounded half-up, as MariaDB stores it). A message the sink
should have dead-lettered (undecodable, or a tombstone for a key not held) that is not in the
dead-letter topic is a finding too (``not_dead_lettered``).

Beyond what the sink should hold, a live fact must show the *last* value of its changelog key:
a key whose last message was dead-lettered (or rejected) keeps an older value in MySQL, and so
does one whose last message has not landed when the caller says the check is ``settled`` (the
changelog is then read up to Kafka's last offset). Such keys are ``stale``: the fact differs from
its changelog, whatever the dead-letter topic explains.

The ledger and the live rows are read in one consistent MySQL snapshot (the sink commits them
together), and Kafka's last offsets after it, so the check is exact while workers run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition

from app.core.feeds import Feed
from app.core.security import kafka_client_options
from app.core.settings import Settings
from app.ops.kafka_positions import KafkaPositions
from app.ops.verify import sources
from app.ops.verify.reconcile import offset_ranges
from models.money import EXACT
from models.tables import TableSpec, decode_key, decode_row
from models.transaction import InvalidRecord, Record

__all__ = [
    "ChangelogFindings",
    "ChangelogPositions",
    "LiveStateFindings",
    "Replay",
    "compare_live_state",
    "fold_changelog",
    "reconcile_changelog",
    "reconcile_table",
]

SHOWN_KEYS = 10
"""How many keys each live-state finding lists (the counts are always complete)."""

Key = tuple[str, ...]


@dataclass(frozen=True)
class ChangelogPositions:
    """Where each side stands for one changelog partition. Offsets inclusive; -1 means nothing."""

    log_start: int
    last_offset: int
    committed: int | None  # next offset the group reads; None: no commit
    ledger: int  # the fact ledger's landed_through


@dataclass
class ChangelogFindings:
    """What verify found for one partition of a table's changelog topic."""

    feed: str
    topic: str
    partition: int
    positions: ChangelogPositions
    checked: int = 0  # changelog messages read (log start .. ledger)
    in_dead_letters: int = 0
    ledger_beyond_kafka: bool = False
    committed_ahead: bool = False
    missing: list[tuple[int, int]] = field(default_factory=list)  # settled check: in Kafka, not landed
    not_dead_lettered: list[tuple[int, int]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.ledger_beyond_kafka or self.committed_ahead or self.missing or self.not_dead_lettered)

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
            "warehouse_landed_through": p.ledger,
            "checked": self.checked,
            "in_dead_letters": self.in_dead_letters,
            "ledger_beyond_kafka": self.ledger_beyond_kafka,
            "committed_ahead_of_sinks": self.committed_ahead,
            "missing": [list(r) for r in self.missing],
            "not_dead_lettered": [list(r) for r in self.not_dead_lettered],
        }


@dataclass
class LiveStateFindings:
    """The fact table's live rows against the state rebuilt from the changelog.

    Counts are complete; the key lists hold the first :data:`SHOWN_KEYS` (sorted).
    ``differing`` entries are ``{"key", "column", "expected", "stored"}``.
    """

    fact_table: str
    expected_keys: int = 0
    live_rows: int = 0
    missing_count: int = 0
    missing: list[list[str]] = field(default_factory=list)
    extra_count: int = 0
    extra: list[list[str]] = field(default_factory=list)
    differing_count: int = 0
    differing: list[dict[str, Any]] = field(default_factory=list)
    stale_count: int = 0
    stale: list[dict[str, Any]] = field(default_factory=list)  # {"key", "offset", "why"}
    missing_dimension_keys: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (
            self.missing_count or self.extra_count or self.differing_count or self.stale_count
            or any(self.missing_dimension_keys.values())
        )

    def to_json(self) -> dict:
        return {
            "fact_table": self.fact_table,
            "ok": self.ok,
            "expected_keys": self.expected_keys,
            "live_rows": self.live_rows,
            "missing_count": self.missing_count,
            "missing": self.missing,
            "extra_count": self.extra_count,
            "extra": self.extra,
            "differing_count": self.differing_count,
            "differing": self.differing,
            "stale_count": self.stale_count,
            "stale": self.stale,
            "missing_dimension_keys": self.missing_dimension_keys,
        }


def reconcile_changelog(
    feed: str, topic: str, partition: int, positions: ChangelogPositions, *, settled: bool
) -> ChangelogFindings:
    """The position rules of one partition (see the module docstring)."""
    findings = ChangelogFindings(feed, topic, partition, positions)
    findings.ledger_beyond_kafka = positions.ledger > positions.last_offset
    if positions.committed is not None:
        findings.committed_ahead = positions.committed - 1 > positions.ledger
    if settled and positions.ledger < positions.last_offset:
        first = max(positions.ledger + 1, positions.log_start)
        if first <= positions.last_offset:
            findings.missing = [(first, positions.last_offset)]
    return findings


DEAD_LETTERED, REJECTED, NOT_LANDED = "dead-lettered", "rejected", "not landed"
"""Why a key's last changelog message is not what its live fact shows."""


@dataclass
class Replay:
    """A changelog replayed: what the live rows must hold, and what does not add up."""

    state: dict[Key, Record] = field(default_factory=dict)  # the last applied value per key
    unexplained: list[int] = field(default_factory=list)  # rejected offsets not in the dead-letter topic
    skipped: int = 0  # dead-lettered messages
    stale: dict[Key, tuple[int, str]] = field(default_factory=dict)  # key -> (its last offset, why not applied)


def fold_changelog(
    spec: TableSpec,
    messages: Iterable[tuple[int, bytes | None, bytes | None]],
    dead_lettered: set[int],
    *,
    landed_through: int | None = None,
) -> Replay:
    """Replay ``(offset, key, value)`` messages (offset order) into the last value per key.

    A message in ``dead_lettered`` is skipped; one the sink would have dead-lettered (undecodable,
    or a tombstone for a key the state does not hold) but that is not there is listed and changes
    nothing. Messages above ``landed_through`` (given for a settled check) are not applied. A key of
    the final state whose last message was not applied is ``stale`` (see the module docstring).
    """
    replay = Replay()
    state = replay.state
    last: dict[Key, tuple[int, str | None]] = {}  # key -> (offset of its last message, why not applied)
    for offset, key, value in messages:
        try:
            columns: Key | None = decode_key(spec, key)
        except InvalidRecord:
            columns = None
        if landed_through is not None and offset > landed_through:
            if columns is not None:
                last[columns] = (offset, NOT_LANDED)
            continue
        if offset in dead_lettered:
            replay.skipped += 1
            if columns is not None:
                last[columns] = (offset, DEAD_LETTERED)
            continue
        try:
            row = decode_row(spec, key, value)
        except InvalidRecord:
            replay.unexplained.append(offset)
            if columns is not None:
                last[columns] = (offset, REJECTED)
            continue
        if row.value is not None:
            state[row.key] = row.value
        elif state.pop(row.key, None) is None:
            replay.unexplained.append(offset)
            continue
        last[row.key] = (offset, None)
    replay.stale = {k: (offset, why) for k, (offset, why) in last.items() if why is not None and k in state}
    return replay


def stored_form(expected: Any, stored: Any) -> Any:
    """``expected`` as the column holding ``stored`` keeps it: a number at the DECIMAL's scale, half-up."""
    if isinstance(stored, Decimal) and isinstance(expected, (int, float, Decimal)) and not isinstance(expected, bool):
        exact = Decimal(repr(expected)) if isinstance(expected, float) else Decimal(expected)
        return exact.quantize(Decimal(1).scaleb(stored.as_tuple().exponent), rounding=ROUND_HALF_UP, context=EXACT)
    return expected


def compare_live_state(
    spec: TableSpec,
    expected: Mapping[Key, Record],
    stored: Mapping[Key, tuple],
    stale: Mapping[Key, tuple[int, str]] | None = None,
) -> LiveStateFindings:
    """The changelog's state against the live rows (``{key: values in spec.value_columns order}``).

    ``stale`` (:attr:`Replay.stale`) lists keys whose last changelog message is not applied; those
    with a live row are findings.
    """
    findings = LiveStateFindings(spec.fact_table, expected_keys=len(expected), live_rows=len(stored))
    outdated = sorted(k for k in (stale or {}) if k in stored)
    findings.stale_count = len(outdated)
    findings.stale = [
        {"key": list(k), "offset": stale[k][0], "why": stale[k][1]} for k in outdated[:SHOWN_KEYS]  # type: ignore[index]
    ]
    missing = sorted(expected.keys() - stored.keys())
    extra = sorted(stored.keys() - expected.keys())
    findings.missing_count, findings.missing = len(missing), [list(k) for k in missing[:SHOWN_KEYS]]
    findings.extra_count, findings.extra = len(extra), [list(k) for k in extra[:SHOWN_KEYS]]
    for key in sorted(expected.keys() & stored.keys()):
        record, row = expected[key], stored[key]
        for column, held in zip(spec.value_columns, row, strict=True):
            want = stored_form(getattr(record, column), held)
            if want != held:
                findings.differing_count += 1
                if len(findings.differing) < SHOWN_KEYS:
                    findings.differing.append({"key": list(key), "column": column, "expected": str(want), "stored": str(held)})
    return findings


async def reconcile_table(
    settings: Settings,
    feed: Feed,
    partitions: list[int],
    kafka: KafkaPositions,
    dead_letters: sources.DeadLetterIndex,
    *,
    settled: bool,
) -> tuple[list[ChangelogFindings], LiveStateFindings]:
    """Reconcile one table feed: per partition its positions, then its fact table's live state."""
    spec = feed.table_spec
    snapshot = await sources.live_fact_snapshot(settings, spec, feed.name, feed.topic)
    tps = [TopicPartition(feed.topic, p) for p in partitions]
    consumer = AIOKafkaConsumer(
        **kafka_client_options(settings.kafka), enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        # After the snapshot: a ledger read at the snapshot is at most these last offsets.
        last = {tp.partition: end - 1 for tp, end in (await consumer.end_offsets(tps)).items()}
        starts = {tp.partition: start for tp, start in (await consumer.beginning_offsets(tps)).items()}
        findings = []
        expected: dict[Key, Record] = {}
        stale: dict[Key, tuple[int, str]] = {}
        for tp in tps:
            p = tp.partition
            positions = ChangelogPositions(
                starts[p], last[p], kafka.committed.get(tp), snapshot.ledgers.get(p, -1)
            )
            found = reconcile_changelog(feed.name, feed.topic, p, positions, settled=settled)
            through = min(positions.ledger, positions.last_offset)
            # A settled check reads on to the end: a key whose last change has not landed is stale.
            messages = await sources.read_partition(consumer, tp, starts[p], positions.last_offset if settled else through)
            dead = set(dead_letters.get((feed.topic, p), ()))
            replay = fold_changelog(spec, messages, dead, landed_through=through)
            found.checked = sum(1 for offset, _, _ in messages if offset <= through)
            found.in_dead_letters = replay.skipped
            found.not_dead_lettered = offset_ranges(np.asarray(replay.unexplained, dtype=np.int64))
            expected.update(replay.state)  # a key lives in one partition
            stale.update(replay.stale)
            findings.append(found)
    finally:
        await consumer.stop()
    live = compare_live_state(spec, expected, snapshot.rows, stale)
    if spec.dimension is not None:
        live.missing_dimension_keys[spec.dimension[0]] = snapshot.orphans[:SHOWN_KEYS] + (
            [f"... and {len(snapshot.orphans) - SHOWN_KEYS} more"] if len(snapshot.orphans) > SHOWN_KEYS else []
        )
    return findings, live
