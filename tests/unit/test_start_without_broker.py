"""A worker that starts while the broker is away waits for it: its Kafka clients retry their start.

The broker here is a closed local port (connection refused at once), so no service is needed. The
table agent and the stream fetcher used to raise from their first ``start()``, and the worker exited
(CI caught it: a Kafka restart that began while a worker was starting killed the worker).
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from agents.tables import TableAgent
from app.core.feeds import load_feeds
from app.core.settings import Settings
from app.runtime.fetcher import StreamFetcher
from tools.ports import free_port


@pytest.fixture
def unreachable() -> Settings:
    return Settings(
        kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}"},
        errors={"retry_backoff_ms": 20, "retry_backoff_max_ms": 100},
    )


async def test_the_table_agent_retries_its_start_until_stopped(unreachable: Settings, caplog) -> None:
    agent = TableAgent(unreachable, {})
    caplog.set_level(logging.WARNING, logger="agents.tables")
    running = asyncio.create_task(agent.run())
    await _until(lambda: _retries(caplog, "table agent: cannot start its Kafka clients") >= 2)
    assert not running.done()  # still trying, not failed
    await asyncio.wait_for(agent.stop(timeout_s=10), 15)
    await asyncio.wait_for(running, 5)  # returns cleanly, without touching the (absent) state
    assert agent.assignment() == set()


async def test_the_stream_fetcher_retries_its_start_until_stopped(unreachable: Settings, caplog) -> None:
    async def deliver(batch):  # never called: nothing is fetched
        raise AssertionError(batch)

    async def held_through(tp):
        return -1

    fetcher = StreamFetcher(unreachable, load_feeds(unreachable), deliver, held_through)
    caplog.set_level(logging.WARNING, logger="app.runtime.fetcher")
    running = asyncio.create_task(fetcher.run())
    await _until(lambda: _retries(caplog, "stream fetcher: cannot start its consumer") >= 2)
    assert not running.done()
    fetcher.stop()
    await asyncio.wait_for(running, 5)
    assert fetcher.consumer is None


def _retries(caplog, text: str) -> int:
    return sum(text in record.getMessage() for record in caplog.records)


async def _until(condition, timeout_s: float = 30) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.05)
