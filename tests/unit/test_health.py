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
