"""The streaming path end to end: the real worker process, the real Kafka broker and MariaDB."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import duckdb
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from app.ops.progress import wait_until_landed
from app.ops.report import lake_glob
from models.derive import blacklisted, flatten
from tests.integration.harness import (
    expected_days,
    fetch_all,
    latest_per_key,
    naive_utc,
    produce_demo,
    read_lake,
    rows_per_day,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SEED = 7
COUNT = 2500

POISON = [
    (b"bad-utf8", b'{"TRANSACTION_ID": "\xff\xfe"}', "not_utf8"),
    (b"bad-json", b'{"TRANSACTION_ID": "TX-1", ', "not_json"),
    (b"bad-record", b'{"TRANSACTION_ID": "TX-2", "AMOUNT": "12.5"}', "invalid_record"),
    (b"tombstone", None, "invalid_record"),
]


async def _send_poison(deployment, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=deployment.settings.kafka.bootstrap_servers)
    await producer.start()
    try:
        for key, value, _reason in POISON:
            await producer.send_and_wait(topic, value, key=key, partition=0)
    finally:
        await producer.stop()


async def _dead_letters(deployment, expected: int) -> list:
    consumer = AIOKafkaConsumer(
        deployment.settings.dead_letter_topic,
        bootstrap_servers=deployment.settings.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    letters = []
    try:
        while len(letters) < expected:
            batch = await consumer.getmany(timeout_ms=5000)
            if not batch:
                break
            for records in batch.values():
                letters.extend(records)
    finally:
        await consumer.stop()
    return letters


async def test_streams_land_exactly_with_dead_letters_and_dimensions(deploy, warehouse_db):
    deployment = await deploy()
    transactions_topic = deployment.feed("transaction_stream").topic
    # Garbage first, in the middle of partition 0: the rest must land around it.
    await _send_poison(deployment, transactions_topic)
    report = await produce_demo(deployment, COUNT, seed=SEED, now=NOW)
    assert report.counts[transactions_topic] == COUNT

    worker = deployment.worker().start()
    await wait_until_landed(deployment.settings, deployment.feeds, timeout_s=180)
    assert worker.alive(), worker.log()[-3000:]

    from tools.loadgen import generate

    produced = list(generate(COUNT, seed=SEED, now=NOW))
    lines = [line for tx in produced for line in flatten(tx)]
    flagged = [b for tx in produced if (b := blacklisted(tx, deployment.settings.blacklist)) is not None]
    assert flagged, "the demo blacklist should flag some transactions"

    # The lake: exact rows per day partition (event time, late events included), each offset once.
    for feed_name, records in [
        ("transaction_stream", produced),
        ("transaction_stream_anonymized", produced),
        ("transaction_flattened", lines),
        ("transaction_stream_blacklisted", flagged),
    ]:
        table = read_lake(deployment, feed_name)
        assert table is not None and table.num_rows == len(records), feed_name
        assert rows_per_day(table) == expected_days(records), feed_name
        positions = list(
            zip(table.column("_kafka_partition").to_pylist(), table.column("_kafka_offset").to_pylist(), strict=True)
        )
        assert len(set(positions)) == len(positions), f"{feed_name}: an offset landed twice"
    stream = read_lake(deployment, "transaction_stream")
    assert sorted(stream.column("transaction_id").to_pylist()) == sorted(tx.transaction_id for tx in produced)
    assert len(expected_days(produced)) >= 3, "events should spread over several days"

    # DuckDB reads the lake with hive partitioning and the documented column types.
    con = duckdb.connect()
    glob = lake_glob(deployment.settings.lake.root, deployment.feed("transaction_stream"))
    described = {row[0]: row[1] for row in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{glob}', hive_partitioning = true)").fetchall()}
    assert described["event_timestamp"] == "TIMESTAMP WITH TIME ZONE"
    assert described["amount"] == "DOUBLE"
    assert described["year"] in ("BIGINT", "INTEGER")
    total = con.execute(f"SELECT round(sum(amount), 2) FROM read_parquet('{glob}', hive_partitioning = true)").fetchone()[0]
    assert total == pytest.approx(round(sum(tx.amount for tx in produced), 2), abs=0.01)

    # The warehouse: the latest event per user / payment method wins.
    users = {row[0]: row[1:] for row in await fetch_all(
        warehouse_db, "SELECT user_id, user_name, user_email, user_country, user_city, last_event_at, is_inferred FROM dim_users"
    )}
    expected_users = latest_per_key(produced, lambda tx: tx.user.id)
    assert users.keys() == expected_users.keys()
    for user_id, tx in expected_users.items():
        assert users[user_id] == (
            tx.user.name, tx.user.email, tx.user.country, tx.user.city, naive_utc(tx.event_timestamp), 0
        ), user_id
    methods = {row[0]: row[1:] for row in await fetch_all(
        warehouse_db, "SELECT payment_method_id, payment_method_name, payment_method_category FROM dim_payment_methods"
    )}
    expected_methods = latest_per_key(produced, lambda tx: tx.payment_method.id)
    assert methods == {k: (tx.payment_method.name, tx.payment_method.category) for k, tx in expected_methods.items()}

    # The dead-letter topic: each poison message once, with its coordinates and reason.
    letters = await _dead_letters(deployment, len(POISON))
    assert len(letters) == len(POISON)
    by_key = {letter.key: letter for letter in letters}
    for key, value, reason in POISON:
        letter = by_key[key]
        headers = {name: raw.decode() for name, raw in letter.headers}
        assert letter.value == value
        assert headers["__connect.errors.topic"] == transactions_topic
        assert headers["__connect.errors.partition"] == "0"
        assert headers["txlake.errors.reason"] == reason
        assert headers["__connect.errors.exception.message"]
    offsets = sorted(int(dict(letter.headers)["__connect.errors.offset"].decode()) for letter in letters)
    assert offsets == [0, 1, 2, 3]

    # The consumer group's commits catch up with the end of every partition (poison included; on
    # the derived topics, which the worker writes in Kafka transactions, past the last commit marker).
    admin = AIOKafkaAdminClient(bootstrap_servers=deployment.settings.kafka.bootstrap_servers)
    await admin.start()
    ends_reader = AIOKafkaConsumer(bootstrap_servers=deployment.settings.kafka.bootstrap_servers,
                                   isolation_level="read_committed")
    await ends_reader.start()
    try:
        rows = await wait_until_landed(deployment.settings, deployment.feeds, timeout_s=10)
        feeds = {feed.name for feed in deployment.feeds}  # not the deltas topic: the table agent's group reads it
        landed = [TopicPartition(r.topic, r.partition) for r in rows if r.last_offset >= 0 and r.feed in feeds]
        want = {(tp.topic, tp.partition): end for tp, end in (await ends_reader.end_offsets(landed)).items()}
        for _ in range(40):
            committed = await admin.list_consumer_group_offsets(deployment.settings.kafka.group_id)
            got = {(tp.topic, tp.partition): meta.offset for tp, meta in committed.items()}
            if all(got.get(key) == value for key, value in want.items()):
                break
            await asyncio.sleep(0.5)
        assert all(got.get(key) == value for key, value in want.items()), (got, want)
    finally:
        await ends_reader.stop()
        await admin.close()

    # A clean stop is clean.
    assert worker.stop() == 0, worker.log()[-3000:]
    assert "Traceback" not in worker.log()
