"""The seeded generator, and `produce` against a stand-in producer (the broker test is in
tests/integration)."""

from __future__ import annotations

import asyncio
import re
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka.errors import KafkaTimeoutError
from aiokafka.partitioner import DefaultPartitioner

from models.derive import Blacklist
from models.transaction import BlacklistedTransaction, FlattenedLine, Transaction, decode, to_wire
from tools import loadgen
from tools.loadgen import StreamTopics, generate, produce

NOW = datetime(2026, 11, 24, 12, 30, tzinfo=UTC)
DAY = timedelta(days=1)


def sample(count: int = 5000, **options: object) -> list[Transaction]:
    return list(generate(count, **{"seed": 7, "now": NOW, **options}))


def test_same_seed_same_output_other_seed_other_output() -> None:
    first = [to_wire(tx) for tx in sample(2000)]
    assert first == [to_wire(tx) for tx in sample(2000)]
    assert first != [to_wire(tx) for tx in sample(2000, seed=8)]


def test_every_generated_record_is_valid() -> None:
    for tx in sample(2000):
        assert decode(Transaction, to_wire(tx)) == tx


def test_ids_and_amounts() -> None:
    transactions = sample()
    assert [tx.transaction_id for tx in transactions[:2]] == ["TX-7-0", "TX-7-1"]
    assert len({tx.transaction_id for tx in transactions}) == len(transactions)
    for tx in transactions:
        assert 1 <= len(tx.products) <= 3
        assert tx.amount == round(sum(p.price * p.quantity for p in tx.products), 2)
    assert {tx.currency for tx in transactions} == {"EUR", "USD", "GBP", "CHF", "JPY", "SEK"}
    assert len({tx.payment_method.id for tx in transactions}) == 8
    assert len({p.id for tx in transactions for p in tx.products}) >= 45
    assert {tx.payment_method.category for tx in transactions} == {"CARD", "WALLET", "BANK_TRANSFER"}
    types = [tx.transaction_type for tx in transactions]
    assert set(types) == {"PURCHASE", "REFUND", "TRANSFER"}
    assert types.count("PURCHASE") > len(types) / 2
    statuses = [tx.status for tx in transactions]
    assert set(statuses) == {"COMPLETED", "PENDING", "FAILED"}
    assert statuses.count("COMPLETED") > len(statuses) / 2


def test_event_times_increase_over_the_window_with_late_arrivals() -> None:
    transactions = sample(10_000, days=3, late_fraction=0.05)
    times = [tx.event_timestamp for tx in transactions]
    earliest = (NOW - 3 * DAY).replace(hour=0, minute=0) - DAY  # late on the first day
    assert all(earliest <= time < NOW for time in times)
    assert min(times) < NOW - 2 * DAY and max(times) > NOW - timedelta(hours=1)
    newest, pending, late = times[0], [], 0
    for time_ in times[1:]:
        if time_ < newest:
            pending.append(time_)
            continue
        # a late arrival belongs to a day before the one the stream had reached
        assert all(earlier.date() < time_.date() for earlier in pending)
        late += len(pending)
        newest, pending = time_, []
    assert 0.04 < late / len(times) < 0.06


def test_no_late_arrivals_when_asked() -> None:
    times = [tx.event_timestamp for tx in sample(3000, late_fraction=0.0)]
    assert times == sorted(times)


def test_users_are_unicode_and_consistent() -> None:
    users = {tx.user.id: tx.user for tx in sample()}
    names = " ".join(user.name for user in users.values())
    for script in (r"[À-ÿ]", r"[\u3040-\u30ff\u4e00-\u9fff]", r"[\u0400-\u04ff]", r"[\u0600-\u06ff]"):
        assert re.search(script, names), script
    assert len(users) > 400
    currencies = {"JP": "JPY", "SE": "SEK", "CH": "CHF", "GB": "GBP"}
    for tx in sample(2000):
        assert tx.user.email.isascii() and tx.user.email.count("@") == 1
        if tx.user.country == "JP":
            assert tx.user.city in {"Tokyo", "Osaka", "Kyoto", "Sapporo"}
    home = [tx.currency == currencies[tx.user.country] for tx in sample(2000) if tx.user.country in currencies]
    assert sum(home) / len(home) > 0.8


def test_users_change_over_time() -> None:
    seen: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for tx in sample(20_000):
        seen[tx.user.id].add((tx.user.city, tx.user.email))
    changed = [user for user, details in seen.items() if len(details) > 1]
    assert len(changed) >= 20
    cities = {user: {city for city, _ in details} for user, details in seen.items()}
    assert any(len(found) > 1 for found in cities.values())


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        next(generate(1, seed=1, now=NOW, late_fraction=2.0))


class FakeBatch:
    """Stands in for aiokafka's BatchBuilder: holds up to `capacity` messages."""

    capacity = 50

    def __init__(self) -> None:
        self.messages: list[tuple[bytes, bytes]] = []

    def append(self, *, key: bytes, value: bytes, timestamp: None) -> object | None:
        if len(self.messages) == self.capacity:
            return None
        self.messages.append((key, value))
        return object()


class FakeProducer:
    """Stands in for AIOKafkaProducer: three partitions per topic, batches delivered at once."""

    instances: list[FakeProducer] = []

    def __init__(self, **config: object) -> None:
        self.config = config
        self.sent: list[tuple[str, int, bytes, bytes]] = []
        self.started = self.stopped = False
        FakeProducer.instances.append(self)

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}

    def create_batch(self) -> FakeBatch:
        return FakeBatch()

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> asyncio.Future:
        assert batch.messages, "empty batch sent"
        self.sent.extend((topic, partition, key, value) for key, value in batch.messages)
        delivered = asyncio.get_running_loop().create_future()
        delivered.set_result(None)
        return delivered


TOPICS = StreamTopics("tx", "flat", "anon", "black")


@pytest.fixture
def fake_producer(monkeypatch: pytest.MonkeyPatch) -> type[FakeProducer]:
    FakeProducer.instances = []
    monkeypatch.setattr(loadgen, "AIOKafkaProducer", FakeProducer)
    return FakeProducer


async def test_produce_writes_the_four_streams(fake_producer: type[FakeProducer]) -> None:
    progress: list[int] = []
    report = await produce(
        "broker:9092", TOPICS, 2500, seed=3, now=NOW, anonymization_key=b"k",
        blacklist=Blacklist(countries={"jp"}), progress=progress.append,
    )
    (producer,) = fake_producer.instances
    assert producer.started and producer.stopped
    assert producer.config["acks"] == "all" and producer.config["enable_idempotence"] is True
    assert progress == [1000, 2000, 2500]
    expected = list(generate(2500, seed=3, now=NOW))
    by_topic: dict[str, list[tuple[bytes, bytes]]] = defaultdict(list)
    partitioner = DefaultPartitioner()
    last_in_partition: dict[tuple[str, int], int] = {}
    for topic, partition, key, value in producer.sent:
        by_topic[topic].append((key, value))
        assert partition == partitioner(key, [0, 1, 2], [0, 1, 2])
        number = int(key.decode().rsplit("-", 1)[1])
        assert number >= last_in_partition.get((topic, partition), 0)  # generation order kept
        last_in_partition[topic, partition] = number
    assert report.counts == {topic: len(messages) for topic, messages in by_topic.items()}
    assert report.counts["tx"] == report.counts["anon"] == 2500
    assert report.counts["flat"] == sum(len(tx.products) for tx in expected)
    assert report.counts["black"] == sum(tx.user.country == "JP" for tx in expected) > 0
    assert sorted(value for _, value in by_topic["tx"]) == sorted(to_wire(tx) for tx in expected)
    for key, value in by_topic["tx"]:
        assert key == decode(Transaction, value).transaction_id.encode()
    for key, value in by_topic["flat"]:
        assert key == decode(FlattenedLine, value).transaction_id.encode()
    for _, value in by_topic["anon"]:
        assert decode(Transaction, value).user.email.endswith("@anonymized.invalid")
    for _, value in by_topic["black"]:
        assert decode(BlacklistedTransaction, value).blacklist_reason.startswith("country:JP")
    assert report.elapsed_s > 0


async def test_produce_respects_the_rate(fake_producer: type[FakeProducer]) -> None:
    started = time.monotonic()
    report = await produce(
        "broker:9092", TOPICS, 300, rate=1000.0, now=NOW, anonymization_key=b"k", blacklist=Blacklist()
    )
    assert time.monotonic() - started >= 0.28
    assert report.counts["black"] == 0 and report.counts["tx"] == 300


async def test_produce_raises_a_failed_delivery(
    fake_producer: type[FakeProducer], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refuse(self: FakeProducer, batch: FakeBatch, topic: str, *, partition: int) -> asyncio.Future:
        failed = asyncio.get_running_loop().create_future()
        failed.set_exception(KafkaTimeoutError(f"{topic}[{partition}]"))
        return failed

    monkeypatch.setattr(FakeProducer, "send_batch", refuse)
    with pytest.raises(KafkaTimeoutError):
        await produce("broker:9092", TOPICS, 10, now=NOW, anonymization_key=b"k", blacklist=Blacklist())
    assert fake_producer.instances[0].stopped


def test_key_cardinality_is_an_option_and_the_demo_catalogue_stays_the_default() -> None:
    wide = sample(20_000, users=100_000, products=10_000)
    assert len({tx.user.id for tx in wide}) > 17_000  # ~20,000 draws from 100,000 users
    ids = {p.id for tx in wide for p in tx.products}
    assert len(ids) > 8_000 and max(ids, key=lambda i: int(i[2:])) <= "P-10000"
    names = {p.id: p.name for tx in wide for p in tx.products}
    assert names["P-001"] == "Wireless headphones" and len(set(names.values())) == len(names)
    assert all(decode(Transaction, to_wire(tx)) == tx for tx in wide[:2000])
    demo = sample(2000)
    assert {p.id for tx in demo for p in tx.products} <= {f"P-{n:03d}" for n in range(1, 51)}
    assert [to_wire(tx) for tx in demo] == [to_wire(tx) for tx in sample(2000, users=500, products=50)]
