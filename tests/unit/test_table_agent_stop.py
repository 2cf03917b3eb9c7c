"""The table agent's stop during the worker's start-up: nothing to flush, so nothing to wait for."""

from __future__ import annotations

import asyncio
import time

from agents.tables import TableAgent
from app.core.settings import Settings


async def test_a_stop_before_the_agent_ran_returns_at_once_and_the_run_never_starts() -> None:
    # A SIGTERM while the worker starts: Faust stops the app before its tasks ran. The stop used to
    # wait its whole 30 s bound for a run that had not begun (Kubernetes' grace period is 30 s).
    agent = TableAgent(Settings(), {})
    started = time.monotonic()
    await agent.stop(timeout_s=30)
    assert time.monotonic() - started < 1
    # The task that would have run it starts late: it returns without touching Kafka.
    await asyncio.wait_for(agent.run(), 1)
    assert agent.consumer is None
    assert agent.assignment() == set()
