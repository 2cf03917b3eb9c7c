"""The derived streams written by the worker itself: exactly models/derive.py, exactly once.

The load generator writes only the transaction stream (``streams.derive`` is on, as in the
demo); the real worker derives TRANSACTION_FLATTENED, TRANSACTION_STREAM_ANONYMIZED and
TRANSACTION_STREAM_BLACKLISTED in Kafka transactions and lands them like any feed. Each test
compares, as multisets keyed by source offset, what a ``read_committed`` consumer finds in the
three topics with :mod:`models.derive` applied to what the transaction topic holds -- after
SIGKILLs under load, with two workers sharing four partitions, and with the process killed at
the exact point between producing a batch's derived records and committing its transaction
(``TXLAKE_TEST_CRASH_AT``, :mod:`app.core.crash_points`). ``txlake verify`` closes each test.

The table derivation is off here (``streams.derive`` on by itself): the derived streams do not
depend on it, and the Faust table agent's pace on a loaded machine would only slow these tests
down. The other integration and fault tests run both derivations together.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
from collections import Counter
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import murmur2

from app.derived.sink import SOURCE_HEADER
from app.ops.progress import feed_progress, wait_until_landed
from models.derive import anonymize, blacklisted, flatten
from models.transaction import Transaction, decode, to_wire
from tests.integration.harness import REPO_ROOT, TXLAKE, Rounds, free_port, produce_demo, read_lake, wait_for_progress

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
DERIVED = {
    "transaction_flattened": "flatten",
    "transaction_stream_anonymized": "anonymize",
    "transaction_stream_blacklisted": "blacklist",
}


async def read_topic(deployment, topic: str, isolation: str = "read_committed") -> list:
    """Every record of ``topic`` (all partitions) up to its end, as a consumer with ``isolation`` sees them."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=deployment.settings.kafka.bootstrap_servers,
        enable_auto_commit=False,
        isolation_level=isolation,
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(await _partition_count(deployment, topic))]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records = []

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in partitions])

        while await behind():
            fetched = await consumer.getmany(timeout_ms=5000, max_records=20_000)
            assert fetched or not await behind(), f"{topic}: no records below the end for 5 s"
            for messages in fetched.values():
                records.extend(messages)
        return records
    finally:
        await consumer.stop()


async def expected_derived(deployment) -> Counter:
    """models/derive.py applied to every committed record of the transaction topic, keyed by source offset."""
    settings = deployment.settings
    key = settings.anonymization.key.get_secret_value().encode()
    expected: Counter = Counter()
    for record in await read_topic(deployment, deployment.feed("transaction_stream").topic):
        tx = decode(Transaction, record.value)
        source = f"{record.topic}/{record.partition}/{record.offset}"
        derived = [("flatten", line) for line in flatten(tx)] + [("anonymize", anonymize(tx, key))]
        flagged = blacklisted(tx, settings.blacklist)
        if flagged is not None:
            derived.append(("blacklist", flagged))
        for derivation, value in derived:
            expected[(source, derivation, tx.transaction_id, _canonical(to_wire(value)))] += 1
    return expected


async def landed_derived(deployment) -> Counter:
    """What the three derived topics hold (committed records only), keyed like :func:`expected_derived`.

    Also checks each message's key (the transaction id) and partition (Kafka's default partitioner).
    """
    found: Counter = Counter()
    for feed_name, derivation in DERIVED.items():
        topic = deployment.feed(feed_name).topic
        records = await read_topic(deployment, topic)
        partitions = await _partition_count(deployment, topic)
        for record in records:
            headers = dict(record.headers)
            assert json.loads(record.value)["TRANSACTION_ID"].encode() == record.key
            assert record.partition == (murmur2(record.key) & 0x7FFFFFFF) % partitions
            found[(headers[SOURCE_HEADER].decode(), derivation, record.key.decode(), _canonical(record.value))] += 1
    return found


async def _partition_count(deployment, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=deployment.settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        return len(described["partitions"])
    finally:
        await admin.close()


def _canonical(value: bytes) -> str:
    return json.dumps(json.loads(value), sort_keys=True)


async def assert_derived_exactly_once(deployment) -> Counter:
    """The derived topics equal the semantics record for record, and the lake holds each exactly once."""
    expected, found = await expected_derived(deployment), await landed_derived(deployment)
    missing, extra = expected - found, found - expected
    assert not missing and not extra, (
        f"{sum(missing.values())} derived records missing (e.g. {list(missing)[:2]}), "
        f"{sum(extra.values())} extra or duplicated (e.g. {list(extra)[:2]})"
    )
    per_stream = Counter(derivation for (_, derivation, _, _), n in found.items() for _ in range(n))
    for feed_name, derivation in DERIVED.items():
        table = read_lake(deployment, feed_name)
        rows = 0 if table is None else table.num_rows
        assert rows == per_stream[derivation], f"{feed_name}: {rows} lake rows, {per_stream[derivation]} in Kafka"
    return per_stream


def run_verify(deployment, env: dict) -> dict:
    done = subprocess.run([TXLAKE, "verify", "--json"], env=env, capture_output=True, timeout=300, cwd=REPO_ROOT)
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["ok"], json.dumps(
        [p for f in report["feeds"] for p in f["partitions"] if not p["ok"]], indent=1
    )[:3000]
    return report


async def _landed_total(deployment) -> int:
    rows = await feed_progress(deployment.settings, deployment.feeds)
    return sum(held + 1 for row in rows for held in row.positions.values())


async def _wait_for_progress(deployment, worker, timeout_s: float = 90) -> None:
    await wait_for_progress(lambda: _landed_total(deployment), await _landed_total(deployment), worker, timeout_s)


ONLY_STREAMS = {"TXLAKE_TABLES__DERIVE": "false", "TXLAKE_STREAMS__DERIVE": "true"}


async def test_derived_streams_equal_the_semantics_exactly_once_across_sigkills(deploy):
    deployment = await deploy(3, TXLAKE_BATCHING__FLUSH_SIZE="300", TXLAKE_BATCHING__ROTATE_INTERVAL_MS="200",
                              TXLAKE_STREAMS__TRANSACTION_TIMEOUT_MS="20000", **ONLY_STREAMS)
    assert deployment.settings.derives_streams
    rng = random.Random(13)
    rounds = Rounds(deployment, first_seed=21, count=5000, rate=3000, now=NOW)  # one per incarnation
    worker = deployment.worker().start()
    for _ in range(4):
        producing = rounds.next()
        await _wait_for_progress(deployment, worker)
        await asyncio.sleep(rng.uniform(0.1, 1.5))
        worker.kill()
        report = await producing
        assert list(report.counts) == [deployment.feed("transaction_stream").topic], "the producer wrote transactions only"
        worker = deployment.worker().start()
    await rounds.next()
    await wait_until_landed(deployment.settings, deployment.feeds, timeout_s=400)
    per_stream = await assert_derived_exactly_once(deployment)
    total = rounds.total
    assert per_stream["flatten"] > total and per_stream["anonymize"] == total and per_stream["blacklist"] > 0
    run_verify(deployment, worker.env)
    assert worker.alive(), worker.log()[-3000:]


@pytest.mark.parametrize("point", ["derived_streams.sent:2", "derived_streams.before_commit:3"])
async def test_a_sigkill_between_produce_and_commit_leaves_no_duplicate_and_no_gap(deploy, point):
    deployment = await deploy(2, TXLAKE_BATCHING__FLUSH_SIZE="500", TXLAKE_STREAMS__TRANSACTION_TIMEOUT_MS="60000",
                              **ONLY_STREAMS)
    await produce_demo(deployment, 6000, seed=3, now=NOW)
    crashing = deployment.worker(TXLAKE_TEST_CRASH_AT=point).start()
    crashing.process.wait(120)
    assert crashing.process.returncode == -9, crashing.log()[-3000:]
    assert f"crash point {point.split(':')[0]} reached" in crashing.log()
    # The killed worker's transaction is still open: its records are in the log, and no
    # read_committed consumer gets them (the next owner aborts it at once, not after the timeout).
    flattened = deployment.feed("transaction_flattened").topic
    assert len(await read_topic(deployment, flattened, "read_uncommitted")) > len(await read_topic(deployment, flattened))
    worker = deployment.worker().start()
    await wait_until_landed(deployment.settings, deployment.feeds, timeout_s=400)
    await assert_derived_exactly_once(deployment)
    run_verify(deployment, worker.env)


async def test_two_workers_on_four_partitions_one_killed_derive_exactly_once(deploy):
    deployment = await deploy(4, TXLAKE_BATCHING__FLUSH_SIZE="400", TXLAKE_BATCHING__ROTATE_INTERVAL_MS="300",
                              TXLAKE_STREAMS__TRANSACTION_TIMEOUT_MS="20000", **ONLY_STREAMS)
    first = deployment.worker(TXLAKE_WEB__PORT=str(free_port())).start()
    second = deployment.worker(TXLAKE_WEB__PORT=str(free_port())).start()
    producing = asyncio.create_task(produce_demo(deployment, 16_000, seed=8, now=NOW, rate=2500))
    await _wait_for_progress(deployment, first)
    await asyncio.sleep(2.0)
    first.kill()  # its partitions move to the second worker after the session timeout, mid-load
    await asyncio.sleep(3.0)
    third = deployment.worker(TXLAKE_WEB__PORT=str(free_port())).start()  # and back to two
    await producing
    await wait_until_landed(deployment.settings, deployment.feeds, timeout_s=400)
    await assert_derived_exactly_once(deployment)
    run_verify(deployment, third.env)
    assert second.alive() and third.alive(), second.log()[-2000:] + third.log()[-2000:]
