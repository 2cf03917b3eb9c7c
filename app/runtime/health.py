"""Liveness, readiness and consumer lag: what Kubernetes probes and Prometheus scrape.

* ``/livez`` -- the event loop answers (it served the request) and no feed is *stalled*:
  a partition assigned here has records waiting (lag > 0) while its feed has neither taken
  a batch nor been busy landing one for ``stall_timeout_s``. That catches the known Faust
  failure where a consumer silently stops fetching after a rebalance while lag grows
  (faust-streaming#175, #523, #640); a restart is the cure. A feed blocked on a sink outage
  is busy (retrying), not stalled: that is a readiness problem, not a liveness one.
* ``/readyz`` -- partitions assigned, no rebalance in progress, Kafka answered the last lag
  poll, and every sink's :meth:`~app.core.sink.Sink.probe` passes (MySQL answers ``SELECT 1``,
  the lake accepts a write). Not ready while recovering.

Both are cheap: the lag poll runs in the background every ``lag_interval_s``; the probes only
read its result, plus one MySQL ping and one small file write, each bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from app.core import metrics
from app.core.security import kafka_client_options
from app.core.settings import Settings
from app.core.sink import Sink
from app.runtime.fetcher import StreamFetcher
from app.runtime.landing import FeedLanding

__all__ = ["Health"]

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.0


class Health:
    """Holds what the probes need; :meth:`refresh_lag` is run periodically by a Faust timer."""

    def __init__(
        self,
        settings: Settings,
        landings: Sequence[FeedLanding],
        sinks: Iterable[Sink],
        fetcher: StreamFetcher | None = None,
    ) -> None:
        self.fetcher = fetcher
        self.settings = settings
        self.landings = {landing.feed.topic: landing for landing in landings}
        self.sinks = tuple(sinks)
        self.started_at = time.monotonic()
        self.lag: dict[TopicPartition, int] = {}
        self.lag_refreshed_at: float | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None

    # -- consumer lag ------------------------------------------------------------------------

    def assignment(self) -> set[TopicPartition]:
        """The stream partitions this worker owns now."""
        return self.fetcher.assignment() if self.fetcher is not None else set()

    async def refresh_lag(self) -> None:
        """Lag = end offset − committed offset, for the partitions assigned to this worker."""
        assigned = self.assignment()
        try:
            if self._consumer is None:
                self._consumer = AIOKafkaConsumer(**kafka_client_options(self.settings.kafka), enable_auto_commit=False)
                await self._consumer.start()
                self._admin = AIOKafkaAdminClient(**kafka_client_options(self.settings.kafka))
                await self._admin.start()
            assert self._admin is not None
            ends = await self._consumer.end_offsets(list(assigned)) if assigned else {}
            committed = await self._admin.list_consumer_group_offsets(self.settings.kafka.group_id)
        except Exception as exc:  # noqa: BLE001 - a failed poll only makes the data stale
            logger.warning("consumer lag poll failed: %s", exc)
            await self.close()
            return
        lag = {}
        for tp, end in ends.items():
            meta = committed.get(tp)
            position = meta.offset if meta is not None and meta.offset >= 0 else 0
            lag[tp] = max(0, end - position)
            metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(lag[tp])
        for gone in set(self.lag) - set(lag):
            metrics.CONSUMER_LAG.remove(gone.topic, str(gone.partition))
        self.lag = lag
        self.lag_refreshed_at = time.monotonic()

    async def close(self) -> None:
        for client, stop in ((self._consumer, "stop"), (self._admin, "close")):
            if client is not None:
                try:
                    await getattr(client, stop)()
                except Exception:  # noqa: BLE001
                    pass
        self._consumer = self._admin = None

    # -- probes ------------------------------------------------------------------------------

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        now = time.monotonic()
        stall = self.settings.health.stall_timeout_s
        stalled = []
        for tp, lag in self.lag.items():
            landing = self.landings.get(tp.topic)
            if lag == 0 or landing is None or landing.busy:
                continue
            last = landing.last_batch_at or self.started_at
            if now - last > stall:
                stalled.append(f"{tp.topic}[{tp.partition}] lag {lag}, no batch for {now - last:.0f}s")
        return not stalled, {"status": "stalled" if stalled else "ok", "stalled": stalled}

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        checks: dict[str, str] = {}
        assigned = self.assignment()
        checks["partitions"] = f"{len(assigned)} assigned" if assigned else "none assigned"
        checks["rebalancing"] = "yes" if self.fetcher is not None and self.fetcher.rebalancing else "no"
        fresh = self.lag_refreshed_at is not None and (
            time.monotonic() - self.lag_refreshed_at < 3 * self.settings.health.lag_interval_s
        )
        checks["kafka"] = "ok" if fresh else "no recent answer"
        probes = await asyncio.gather(*(self._probe(sink.probe()) for sink in self.sinks))
        checks.update((sink.name, result) for sink, result in zip(self.sinks, probes, strict=True))
        ready = (
            bool(assigned)
            and checks["rebalancing"] == "no"
            and checks["kafka"] == "ok"
            and all(result == "ok" for result in probes)
        )
        return ready, {"status": "ready" if ready else "not ready", "checks": checks}

    @staticmethod
    async def _probe(check: Any) -> str:
        try:
            await asyncio.wait_for(check, PROBE_TIMEOUT_S)
            return "ok"
        except Exception as exc:  # noqa: BLE001
            return f"failed: {type(exc).__name__}: {exc}"[:200]
