"""The four tables end to end: derived by the real worker, landed live in MariaDB, exactly once.

The expected aggregates are computed here independently (plain loops over the generated
transactions, exact decimals, :mod:`tests.tables_oracle`), following ``ksql/03_tables.sql``.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import signal
import time
from datetime import UTC, datetime
from decimal import Decimal

import aiomysql
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from app.ops.progress import feed_progress, wait_until_landed
from app.tables.rates import load_rates
from models.transaction import to_wire
from tests.integration.harness import Rounds, fetch_all, produce_demo
from tests.tables_oracle import CENT, assert_tables_match, expected_tables
from tools.loadgen import generate

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

NOW = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)
async def landed_tables(warehouse) -> dict[str, dict[tuple, tuple]]:
    """The live rows (snapshot_version = 0) of the four fact tables, shaped like expected_tables."""
    uts = await fetch_all(warehouse, "SELECT user_id, transaction_type, total_amount, transaction_count, avg_amount "
                                     "FROM fact_user_transaction_summary WHERE snapshot_version = 0")
    eur = await fetch_all(warehouse, "SELECT user_id, transaction_type, total_amount_eur, transaction_count, "
                                     "avg_amount_eur, exchange_rate FROM fact_user_transaction_summary_eur "
                                     "WHERE snapshot_version = 0")
    pmt = await fetch_all(warehouse, "SELECT payment_method_id, total_amount, transaction_count, avg_amount "
                                     "FROM fact_payment_method_totals WHERE snapshot_version = 0")
    ppc = await fetch_all(warehouse, "SELECT product_id, purchase_count, total_revenue, avg_price, unique_buyers "
                                     "FROM fact_product_purchase_counts WHERE snapshot_version = 0")
    return {
        "user_transaction_summary": {(r[0], r[1]): tuple(r[2:]) for r in uts},
        "user_transaction_summary_eur": {(r[0], r[1]): tuple(r[2:]) for r in eur},
        "payment_method_totals": {(r[0],): tuple(r[1:]) for r in pmt},
        "product_purchase_counts": {(r[0],): tuple(r[1:]) for r in ppc},
    }


async def _wait_landed(deployment, timeout_s: float = 240) -> None:
    # Twice: the first pass can see the table topics before the table agent wrote its last changes.
    for _ in range(2):
        await wait_until_landed(deployment.settings, deployment.feeds, timeout_s)


async def test_derived_tables_equal_an_independent_computation(deploy, warehouse_db):
    deployment = await deploy(4, TXLAKE_BATCHING__ROTATE_INTERVAL_MS="300")
    transactions = list(generate(6000, seed=31, now=NOW))
    await produce_demo(deployment, 6000, seed=31, now=NOW)
    worker = deployment.worker().start()
    await _wait_landed(deployment)
    assert worker.alive(), worker.log()[-3000:]
    assert_tables_match(await landed_tables(warehouse_db), expected_tables(transactions))

    # The changelog topics are in ksqlDB's format: JSON key object for the two-column key,
    # upper-cased JSON value without the key columns.
    message = await _first_message(deployment, deployment.feed("user_transaction_summary").topic)
    key, value = json.loads(message.key), json.loads(message.value)
    assert set(key) == {"USER_ID", "TRANSACTION_TYPE"}
    assert set(value) == {"TOTAL_AMOUNT", "TRANSACTION_COUNT", "AVG_AMOUNT"}
    product = await _first_message(deployment, deployment.feed("product_purchase_counts").topic)
    assert product.key.startswith(b"P-") and "UNIQUE_BUYERS" in json.loads(product.value)

    # Every user and payment method of a fact is in its dimension (completed, not inferred).
    orphans = await fetch_all(
        warehouse_db,
        "SELECT COUNT(*) FROM fact_user_transaction_summary f JOIN dim_users d USING (user_id) WHERE d.is_inferred",
    )
    assert orphans == [(0,)]


@pytest.mark.serial  # bounds the latency: a parallel test's load would be measured with it
async def test_a_live_update_is_visible_within_the_batch_window(deploy, warehouse_db):
    deployment = await deploy(2, TXLAKE_BATCHING__ROTATE_INTERVAL_MS="1000")
    await produce_demo(deployment, 500, seed=5, now=NOW)
    worker = deployment.worker().start()
    await _wait_landed(deployment)
    before = await fetch_all(warehouse_db, "SELECT SUM(transaction_count) FROM fact_payment_method_totals WHERE snapshot_version = 0")
    started = time.monotonic()
    await produce_demo(deployment, 20, seed=6, now=NOW)  # a few new completed transactions
    expected = sum(1 for tx in generate(20, seed=6, now=NOW) if tx.status == "COMPLETED")
    while True:
        after = await fetch_all(warehouse_db, "SELECT SUM(transaction_count) FROM fact_payment_method_totals WHERE snapshot_version = 0")
        if after[0][0] == before[0][0] + expected:
            break
        assert time.monotonic() - started < 15, f"not visible after 15 s: {before} -> {after}"
        assert worker.alive(), worker.log()[-3000:]
        await asyncio.sleep(0.05)
    # Two 1 s windows (deltas, then the table topic) plus processing; generous for a loaded CI machine.
    assert time.monotonic() - started < 15


async def test_sigkilled_derivation_still_counts_every_transaction_once(deploy, warehouse_db):
    """Three workers SIGKILLed at a random moment while they derive: each incarnation gets a fresh
    round of transactions (so it has work to be killed in, however fast it caught up), and the
    tables still count every transaction once."""
    deployment = await deploy(3, TXLAKE_BATCHING__FLUSH_SIZE="200", TXLAKE_BATCHING__ROTATE_INTERVAL_MS="200")
    rounds = Rounds(deployment, first_seed=77, count=4000, rate=3000, now=NOW)
    rng = random.Random(7)
    worker = deployment.worker().start()
    for _ in range(3):
        producing = rounds.next()
        await _wait_for_table_progress(deployment, worker)
        await asyncio.sleep(rng.uniform(0.1, 1.5))
        worker.kill()
        await producing
        worker = deployment.worker().start()
    await rounds.next()
    await _wait_landed(deployment, timeout_s=300)
    assert worker.alive(), worker.log()[-3000:]
    assert_tables_match(await landed_tables(warehouse_db), expected_tables(rounds.transactions()))


async def test_ksqldb_changelogs_upsert_delete_infer_and_dead_letter(deploy, warehouse_db):
    """With derivation off the worker lands what ksqlDB writes, tombstones and bad input included."""
    deployment = await deploy(1, TXLAKE_TABLES__DERIVE="false")
    summary = deployment.feed("user_transaction_summary").topic
    methods = deployment.feed("payment_method_totals").topic
    u_key = json.dumps({"USER_ID": "U-LATE", "TRANSACTION_TYPE": "PURCHASE"}).encode()
    await _send(deployment, summary, [
        (u_key, b'{"TOTAL_AMOUNT": 10.5, "TRANSACTION_COUNT": 1, "AVG_AMOUNT": 10.5}'),
        (json.dumps({"USER_ID": "U-GONE", "TRANSACTION_TYPE": "REFUND"}).encode(),
         b'{"total_amount": 3, "transaction_count": 1, "avg_amount": 3}'),  # lower-case names accepted
        (u_key, b'{"TOTAL_AMOUNT": 30.25, "TRANSACTION_COUNT": 2, "AVG_AMOUNT": 15.125}'),
        (b"not-json", b'{"TOTAL_AMOUNT": 1, "TRANSACTION_COUNT": 1}'),                       # key does not parse
        (u_key, b'{"TOTAL_AMOUNT": "lots", "TRANSACTION_COUNT": 1}'),                        # wrong type
        (json.dumps({"USER_ID": "U-NEVER", "TRANSACTION_TYPE": "PURCHASE"}).encode(), None),  # unknown key
    ])
    await _send(deployment, methods, [(b'"PM-NEW"', b'{"PAYMENT_METHOD_NAME": "New", "TOTAL_AMOUNT": 99.99, "TRANSACTION_COUNT": 1}')])
    worker = deployment.worker().start()
    await _wait_landed(deployment)
    rows = await fetch_all(warehouse_db, "SELECT user_id, transaction_type, total_amount, transaction_count "
                                         "FROM fact_user_transaction_summary ORDER BY user_id")
    assert rows == [("U-GONE", "REFUND", Decimal("3.00"), 1), ("U-LATE", "PURCHASE", Decimal("30.25"), 2)]
    # The facts arrived before their dimension members: inferred rows, no FK error.
    assert await fetch_all(warehouse_db, "SELECT user_id, is_inferred FROM dim_users ORDER BY user_id") == [
        ("U-GONE", 1), ("U-LATE", 1),
    ]
    assert await fetch_all(warehouse_db, "SELECT payment_method_id, is_inferred FROM dim_payment_methods") == [("PM-NEW", 1)]

    letters = await _dead_letter_reasons(deployment, 3)
    assert sorted(letters) == [
        (summary, 3, "invalid_record"), (summary, 4, "invalid_record"), (summary, 5, "unknown_key"),
    ]

    # A tombstone deletes the live row.
    await _send(deployment, summary, [(json.dumps({"USER_ID": "U-GONE", "TRANSACTION_TYPE": "REFUND"}).encode(), None)])
    await _wait_landed(deployment)
    assert [r[0] for r in await fetch_all(warehouse_db, "SELECT user_id FROM fact_user_transaction_summary")] == ["U-LATE"]

    # The real user arrives: the transaction stream's dimension upsert completes the inferred row.
    producer_tx = next(tx for tx in generate(50, seed=3, now=NOW))
    completed = producer_tx.model_copy(update={"user": producer_tx.user.model_copy(update={"id": "U-LATE"})})
    await _send(deployment, deployment.feed("transaction_stream").topic, [(b"TX-LATE", to_wire(completed))])
    await _wait_landed(deployment)
    assert await fetch_all(warehouse_db, "SELECT user_name, is_inferred FROM dim_users WHERE user_id = 'U-LATE'") == [
        (completed.user.name, 0),
    ]

    # ON DELETE CASCADE: removing a dimension member removes its facts (live and versions alike).
    await _execute(warehouse_db, "DELETE FROM dim_users WHERE user_id = 'U-LATE'")
    assert await fetch_all(warehouse_db, "SELECT COUNT(*) FROM fact_user_transaction_summary") == [(0,)]
    assert worker.alive(), worker.log()[-3000:]


async def _execute(warehouse, sql: str) -> None:
    connection = await aiomysql.connect(**{**warehouse.connect_kwargs, "autocommit": True})
    try:
        async with connection.cursor() as cursor:
            await cursor.execute(sql)
    finally:
        connection.close()


async def _dead_letter_reasons(deployment, expected: int) -> list[tuple[str, int, str]]:
    consumer = AIOKafkaConsumer(
        deployment.settings.dead_letter_topic, bootstrap_servers=deployment.settings.kafka.bootstrap_servers,
        auto_offset_reset="earliest", enable_auto_commit=False,
    )
    await consumer.start()
    found = []
    try:
        while len(found) < expected:
            message = await asyncio.wait_for(consumer.getone(), 60)
            headers = {k: v.decode() for k, v in message.headers}
            found.append((headers["__connect.errors.topic"], int(headers["__connect.errors.offset"]),
                          headers["txlake.errors.reason"]))
    finally:
        await consumer.stop()
    return found


async def _wait_for_table_progress(deployment, worker, timeout_s: float = 90) -> None:
    async def landed() -> int:
        rows = await feed_progress(deployment.settings, deployment.feeds)
        return sum(max(r.warehouse or 0, 0) for r in rows if r.feed == "product_purchase_counts")

    start = await landed()
    deadline = time.monotonic() + timeout_s
    while await landed() <= start:
        assert worker.alive(), worker.log()[-3000:]
        assert time.monotonic() < deadline, worker.log()[-3000:]
        await asyncio.sleep(0.2)


async def _first_message(deployment, topic: str):
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=deployment.settings.kafka.bootstrap_servers, auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        return await asyncio.wait_for(consumer.getone(), 30)
    finally:
        await consumer.stop()


async def _send(deployment, topic: str, messages: list[tuple[bytes | None, bytes | None]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=deployment.settings.kafka.bootstrap_servers)
    await producer.start()
    try:
        for key, value in messages:
            await producer.send_and_wait(topic, value, key=key, partition=0)
    finally:
        await producer.stop()


async def test_a_group_commit_past_a_delta_does_not_skip_it(deploy, warehouse_db):
    """The derivation reads from its state's own progress, not from the group's committed offset:
    a delta committed past (by a consumer bug, an operator, a zombie) is still applied."""
    from aiokafka.structs import OffsetAndMetadata, TopicPartition

    from app.tables.deltas import delta_messages

    deployment = await deploy(2, TXLAKE_BATCHING__ROTATE_INTERVAL_MS="300")
    await produce_demo(deployment, 300, seed=41, now=NOW)
    worker = deployment.worker().start()
    await _wait_landed(deployment)
    assert worker.stop() == 0, worker.log()[-3000:]

    # The transaction of a new user as the delta sink would route it, written straight to the
    # deltas topic; then the derivation's group is committed past it.
    tx = next(t for t in generate(50, seed=42, now=NOW) if t.status == "COMPLETED")
    tx = tx.model_copy(update={"user": tx.user.model_copy(update={"id": "U-COMMITTED-PAST"})})
    settings = deployment.settings
    deltas_topic = settings.table_deltas_topic
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    await producer.start()
    try:
        written = {}
        for target, value in delta_messages([tx], [10**9], 0, load_rates(), 2):
            written[target] = (await producer.send_and_wait(deltas_topic, value, partition=target)).offset
    finally:
        await producer.stop()
    committer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers,
                                 group_id=settings.table_group_id, enable_auto_commit=False)
    await committer.start()
    try:
        committer.assign([TopicPartition(deltas_topic, p) for p in written])
        await committer.commit({TopicPartition(deltas_topic, p): OffsetAndMetadata(o + 1, "") for p, o in written.items()})
    finally:
        await committer.stop()

    worker = deployment.worker().start()
    deadline = time.monotonic() + 90
    while True:
        rows = await fetch_all(warehouse_db, "SELECT transaction_type, transaction_count, total_amount "
                                             "FROM fact_user_transaction_summary WHERE user_id = 'U-COMMITTED-PAST'")
        if rows:
            break
        assert worker.alive(), worker.log()[-3000:]
        assert time.monotonic() < deadline, "the delta committed past was never applied\n" + worker.log()[-3000:]
        await asyncio.sleep(0.5)
    assert rows == [(tx.transaction_type, 1, Decimal(str(tx.amount)).quantize(CENT))]


@pytest.mark.parametrize("point", ["tables.produced", "tables.progressed"])
async def test_a_sigkill_between_produce_and_ack_leaves_no_duplicate_and_no_gap(deploy, warehouse_db, point):
    """Killed where a random kill rarely lands: after the broker acknowledged a flush's changelog and
    table records, before its progress was written (``tables.produced``) or before the deltas were
    committed (``tables.progressed``). The restarted worker folds those deltas again: the state
    already holds them (watermarks skip them), the values are sent again, nothing counts twice.

    An incarnation is fed new rounds of transactions until it reaches its crash point, so it
    always gets there, however large the windows a slow machine makes."""
    deployment = await deploy(4, TXLAKE_BATCHING__FLUSH_SIZE="200", TXLAKE_BATCHING__ROTATE_INTERVAL_MS="200")
    rounds = Rounds(deployment, first_seed=93, count=3000, rate=2000, now=NOW)
    for flush in (3, 7):  # two incarnations die at the n-th flush reaching the point
        worker = deployment.worker(TXLAKE_TEST_CRASH_AT=f"{point}:{flush}").start()
        producing = rounds.next()
        deadline = time.monotonic() + 180
        while worker.alive():
            assert time.monotonic() < deadline, f"never reached {point} #{flush}\n" + worker.log()[-3000:]
            if producing.done():
                await producing
                producing = rounds.next()
            await asyncio.sleep(0.1)
        await producing
        assert worker.process.returncode == -9, worker.log()[-3000:]
        assert f"crash point {point} reached" in worker.log()
    worker = deployment.worker().start()
    await rounds.next()
    await _wait_landed(deployment, timeout_s=300)
    assert worker.alive(), worker.log()[-3000:]
    assert_tables_match(await landed_tables(warehouse_db), expected_tables(rounds.transactions()))


def _deltas_partitions_of(worker) -> list[int] | None:
    """The deltas partitions the worker's table agent last announced (None: not yet)."""
    found = re.findall(r"assigned deltas partitions \[([\d, ]*)\]", worker.log())
    return None if not found else [int(p) for p in found[-1].split(",") if p.strip()]


async def test_a_worker_frozen_past_its_session_exits_instead_of_writing(deploy, warehouse_db):
    """SIGSTOP one of two workers for longer than the session timeout: the group gives its deltas
    partitions to the other, which restores them. Resumed, the frozen worker must not flush what it
    held (its records could land after that restore and leave an older state last): it exits. The
    tables stay equal to an independent computation."""
    from tests.integration.harness import free_port

    deployment = await deploy(4, TXLAKE_BATCHING__ROTATE_INTERVAL_MS="300")
    transactions = list(generate(12_000, seed=57, now=NOW))
    producing = asyncio.create_task(produce_demo(deployment, 12_000, seed=57, now=NOW, rate=1000))
    frozen = deployment.worker(TXLAKE_WEB__PORT=str(free_port())).start()
    other = deployment.worker(TXLAKE_WEB__PORT=str(free_port())).start()
    deadline = time.monotonic() + 120
    while not all(len(_deltas_partitions_of(w) or []) == 2 for w in (frozen, other)):
        assert frozen.alive() and other.alive(), frozen.log()[-2000:] + other.log()[-2000:]
        assert time.monotonic() < deadline, "the two workers never split the deltas partitions"
        await asyncio.sleep(0.5)
    await asyncio.sleep(3)  # both derive
    frozen.process.send_signal(signal.SIGSTOP)
    await asyncio.sleep(deployment.settings.kafka.session_timeout_ms / 1000 * 2.5)
    frozen.process.send_signal(signal.SIGCONT)
    assert frozen.process.wait(60) == 70, frozen.log()[-3000:]
    assert "did not run for" in frozen.log()
    await producing
    await _wait_landed(deployment, timeout_s=300)
    assert other.alive(), other.log()[-3000:]
    assert _deltas_partitions_of(other) == [0, 1, 2, 3]
    assert_tables_match(await landed_tables(warehouse_db), expected_tables(transactions))
