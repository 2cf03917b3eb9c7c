"""Liveness decisions: a stalled feed fails /livez, a busy or idle one does not."""

from __future__ import annotations

import time
from types import SimpleNamespace

from aiokafka import TopicPartition

from app.core.settings import Settings
from app.runtime.health import Health


def _health(landing) -> Health:
    settings = Settings(health={"stall_timeout_s": 10})
    health = Health(settings=settings, landings=[], sinks=[])
    health.landings = {"tx": landing}
    return health


def test_lag_without_batches_for_longer_than_the_stall_timeout_is_not_live():
    landing = SimpleNamespace(busy=False, last_batch_at=time.monotonic() - 60)
    health = _health(landing)
    health.lag = {TopicPartition("tx", 0): 500}
    ok, body = health.liveness()
    assert not ok and body["stalled"] and "tx[0] lag 500" in body["stalled"][0]


def test_a_feed_busy_retrying_a_sink_is_live():
    landing = SimpleNamespace(busy=True, last_batch_at=time.monotonic() - 600)
    health = _health(landing)
    health.lag = {TopicPartition("tx", 0): 500}
    assert health.liveness()[0]


def test_no_lag_or_recent_batches_are_live():
    landing = SimpleNamespace(busy=False, last_batch_at=time.monotonic() - 600)
    health = _health(landing)
    health.lag = {TopicPartition("tx", 0): 0}
    assert health.liveness()[0]
    landing.last_batch_at = time.monotonic()
    health.lag = {TopicPartition("tx", 0): 500}
    assert health.liveness()[0]


class _Sink:
    """A sink whose readiness probe fails (an unreachable store) and counts its calls."""

    name = "lake"

    def __init__(self) -> None:
        self.probed = 0

    async def probe(self) -> None:
        self.probed += 1
        raise ConnectionError("unreachable")


def _readiness_health(*, records_at=None, lag_at=None, written_at=None) -> tuple[Health, _Sink]:
    lake = _Sink()
    fetcher = SimpleNamespace(
        assignment=lambda: {TopicPartition("tx", 0)}, rebalancing=False, records_received_at=records_at
    )
    health = Health(settings=Settings(health={"lag_interval_s": 15}), landings=[], sinks=[lake], fetcher=fetcher)
    health.landings = {"tx": SimpleNamespace(written_at={lake: written_at} if written_at else {})}
    health.lag_refreshed_at = lag_at
    return health, lake


async def test_records_received_count_as_an_answer_from_kafka_before_any_lag_poll():
    health, _ = _readiness_health(records_at=time.monotonic(), written_at=time.monotonic())
    ready, body = await health.readiness()
    assert ready, body
    assert body["checks"]["kafka"] == "ok"


async def test_neither_records_nor_a_lag_poll_for_three_intervals_is_not_ready():
    long_ago = time.monotonic() - 46
    health, _ = _readiness_health(records_at=long_ago, lag_at=long_ago, written_at=time.monotonic())
    ready, body = await health.readiness()
    assert not ready and body["checks"]["kafka"] == "no recent answer"
    health.lag_refreshed_at = time.monotonic()
    assert (await health.readiness())[0]


async def test_a_sink_that_landed_a_batch_lately_is_not_probed():
    health, lake = _readiness_health(lag_at=time.monotonic(), written_at=time.monotonic())
    ready, body = await health.readiness()
    assert ready and body["checks"]["lake"] == "ok" and lake.probed == 0


async def test_a_sink_idle_for_a_while_is_probed_and_a_failed_probe_is_not_ready():
    health, lake = _readiness_health(lag_at=time.monotonic(), written_at=time.monotonic() - 60)
    ready, body = await health.readiness()
    assert not ready and lake.probed == 1
    assert body["checks"]["lake"] == "failed: ConnectionError: unreachable"
