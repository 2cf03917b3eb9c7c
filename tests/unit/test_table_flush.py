"""The table derivation's window and flush without Kafka: fold, write once per key, replay, restore format."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from decimal import Decimal

from app.tables.cache import PartitionCache
from app.tables.deltas import delta_messages
from app.tables.flush import plan
from app.tables.rates import load_rates
from app.tables.state import BUYERS_TABLE, PROGRESS_TABLE, state_table_names
from app.tables.store import StoredState, changelog_key, changelog_topics, decode_key, decode_state
from models.aggregates import AGGREGATORS
from models.tables import TABLES, encode_value
from tools.loadgen import generate

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
CHANGELOGS = changelog_topics("app")
OUTPUTS = {table: (spec.topic, 1) for table, spec in TABLES.items()}


def _deltas(count: int, seed: int, batch: int = 100) -> list[bytes]:
    """The delta messages of ``count`` transactions on one source partition, in ``batch``-sized source batches."""
    transactions = list(generate(count, seed=seed, now=NOW))
    values = []
    for start in range(0, count, batch):
        chunk = transactions[start:start + batch]
        values += [v for _, v in delta_messages(chunk, range(start, start + len(chunk)), 0, load_rates(), 1)]
    return values


def _reference(values: list[bytes]) -> dict[str, dict[str, bytes]]:
    """Every key's value after folding ``values`` one message at a time with the copying fold."""
    cache = PartitionCache(StoredState(0))
    for offset, value in enumerate(values):
        cache.fold(offset, value)
    entries, _ = cache.drain()
    out: dict[str, dict[str, bytes]] = {table: {} for table in TABLES}
    for table, key, state, _changed in entries:
        out[table][key] = encode_value(AGGREGATORS[table].value(state))
    return out


def _outputs(flush) -> dict[str, dict[str, bytes]]:
    by_topic = {spec.topic: table for table, spec in TABLES.items()}
    out: dict[str, dict[str, bytes]] = {table: {} for table in TABLES}
    for (topic, _partition), records in flush.records.items():
        if topic in by_topic:
            for key, value in records:
                assert key.decode() not in out[by_topic[topic]], "a key is written once per flush"
                out[by_topic[topic]][key.decode()] = value
    return out


def test_a_flush_writes_each_touched_key_once_with_the_folded_value():
    values = _deltas(600, seed=3)
    cache = PartitionCache(StoredState(0))
    for offset, value in enumerate(values):
        cache.fold(offset, value)
    assert cache.unflushed and cache.position == len(values)
    flush = plan([cache], CHANGELOGS, OUTPUTS, deltas_partitions=1)
    assert _outputs(flush) == _reference(values)
    # Each changed key's state is in the stored state and on its changelog, as the same bytes.
    for table in TABLES:
        records = dict(flush.records[(CHANGELOGS[table], 0)])
        assert {decode_key(k): v for k, v in records.items()} == cache.stored.tables[table]
        assert flush.changed[table] == len(records)
    buyers = dict(flush.records[(CHANGELOGS[BUYERS_TABLE], 0)])
    assert {decode_key(k) for k in buyers} == set(cache.stored.tables[BUYERS_TABLE])
    assert cache.touched_keys == 0 and not any(cache.touched.values())


def test_windows_flushed_at_any_points_end_in_the_same_values_as_one_window():
    values = _deltas(900, seed=5, batch=50)
    reference = _reference(values)
    rng = random.Random(2)
    cache = PartitionCache(StoredState(0))
    latest: dict[str, dict[str, bytes]] = {table: {} for table in TABLES}
    for offset, value in enumerate(values):
        cache.fold(offset, value)
        if rng.random() < 0.3:
            for table, rows in _outputs(plan([cache], CHANGELOGS, OUTPUTS, 1)).items():
                latest[table].update(rows)
    for table, rows in _outputs(plan([cache], CHANGELOGS, OUTPUTS, 1)).items():
        latest[table].update(rows)
    assert latest == reference


def test_a_replayed_window_changes_no_state_but_sends_every_touched_value_again():
    values = _deltas(300, seed=8)
    cache = PartitionCache(StoredState(0))
    for offset, value in enumerate(values):
        cache.fold(offset, value)
    first = plan([cache], CHANGELOGS, OUTPUTS, 1)
    # A crash after the changelogs were written but before the progress: the next owner restores
    # the stored state as it is and folds the same messages again.
    restored = StoredState(0, tables={t: dict(keys) for t, keys in cache.stored.tables.items()})
    again = PartitionCache(restored)
    for offset, value in enumerate(values):
        again.fold(offset, value)
    replay = plan([again], CHANGELOGS, OUTPUTS, 1)
    assert not replay.changed and not any(k[0] in CHANGELOGS.values() for k in replay.records)
    assert _outputs(replay) == _outputs(first)


def test_output_records_follow_the_output_topics_partitioner_when_counts_differ():
    from app.tables.deltas import partition_of

    values = _deltas(200, seed=9)
    cache = PartitionCache(StoredState(1))
    for offset, value in enumerate(values):
        cache.fold(offset, value)
    flush = plan([cache], CHANGELOGS, {t: (spec.topic, 3) for t, spec in TABLES.items()}, deltas_partitions=2)
    for (topic, partition), records in flush.records.items():
        if topic in CHANGELOGS.values():
            assert partition == 1
        else:
            assert all(partition_of(key, 3) == partition for key, _ in records)


def test_changelog_keys_are_the_bytes_faust_json_codec_writes():
    for key in ["U00001", '{"USER_ID":"U1","TRANSACTION_TYPE":"PURCHASE"}', "P-1\x1fU2", "Zoë", "日本", "a\x7fb", "q\"\\"]:
        assert changelog_key(key) == json.dumps(key).encode()
        assert decode_key(changelog_key(key)) == key
    assert set(CHANGELOGS) == set(state_table_names()) and CHANGELOGS[PROGRESS_TABLE] == "app-deltas_progress-changelog"


def test_fast_values_equal_the_models_json():
    rng = random.Random(4)
    for _ in range(3000):
        total = Decimal(rng.randint(-10**12, 10**12)) / 10 ** rng.randint(0, 6)
        count = rng.randint(0, 10**6)
        states = {
            "user_transaction_summary": {"wm": {}, "count": count, "total": str(total)},
            "user_transaction_summary_eur": {"wm": {}, "count": count, "total": str(total), "rate": "0.92"},
            "payment_method_totals": {"wm": {}, "count": count, "total": str(total), "name": "VISA"},
            "product_purchase_counts": {"wm": {}, "count": count, "total": str(total), "price_sum": str(abs(total)),
                                        "lines": rng.randint(0, 5), "name": "Pen", "category": "OFFICE", "buyers": 2},
        }
        for table, state in states.items():
            aggregator = AGGREGATORS[table]
            assert aggregator.value_json(state) == encode_value(aggregator.value(state)), (table, state)
    assert AGGREGATORS["payment_method_totals"].value_json({"wm": {}}) == encode_value(
        AGGREGATORS["payment_method_totals"].value({"wm": {}})
    )


def test_a_stored_progress_written_by_faust_is_read_back():
    assert decode_state(b"41") == 41  # Faust wrote the progress as a JSON number
