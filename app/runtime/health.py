"""Liveness, readiness and consumer lag: what Kubernetes probes and Prometheus scrape.

* ``/livez`` -- the event loop answers (it served the request) and no feed is *stalled*:
  a partition assigned here has records waiting (lag > 0) while its feed has neither taken
  a batch nor been busy landing one for ``stall_timeout_s``. That catches the known Faust
  failure where a consumer silently stops fetching after a rebalance while lag grows
  (faust-streaming#175, #523, #640); a restart is the cure. A feed blocked on a sink outage
  is busy (retrying), not stalled: that is a readiness problem, not a liveness one.
* ``/readyz`` -- partitions assigned, no rebalance in progress, Kafka answered recently, and
  every sink's :meth:`~app.core.sink.Sink.probe` passes (MySQL answers ``SELECT 1``, the lake
  accepts a write). Not ready while recovering. "Kafka answered" means the stream consumer
  received records, or the lag poll succeeded, within three lag intervals: a worker that is
  landing is talking to Kafka whether or not a poll just ran. (It used to mean the lag poll
  alone, which Faust started only after table recovery and which first ran one interval later:
  a restarted worker landed for 15 s or more while ``/readyz`` said "kafka: no recent answer".)
  Likewise a sink that took a batch within the last :data:`LANDED_RECENTLY_S` is reachable and
  is not probed: a probe queued behind the batches landing (the connection pool, the thread
  pool) would time out under load and report a landing worker as not ready.

Both are cheap: the lag poll runs in the background every ``lag_interval_s`` (the first at once);
the probes only read its result, plus one MySQL ping and one small file write, each bounded by a
timeout.
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
LANDED_RECENTLY_S = 10.0
"""A sink with a successful write this recent counts as reachable without a probe."""


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
                self._consumer = AIOKafkaConsumer(
                    **kafka_client_options(self.settings.kafka), enable_auto_commit=False, isolation_level="read_committed"
                )
                await self._consumer.start()
                self._admin = AIOKafkaAdminClient(**kafka_client_options(self.settings.kafka))
                await self._admin.start()
            assert self._admin is not None
            ends = await self._consumer.end_offsets(list(assigned)) if assigned else {}
            group = self.fetcher.group_id if self.fetcher is not None else self.settings.kafka.group_id
            committed = await self._admin.list_consumer_group_offsets(group)
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
                except Exception:  # noqa: BLE001, S110 - closing anyway
                    pass
        self._consumer = self._admin = None

    def kafka_answered_at(self) -> float | None:
        """When Kafka last answered (``time.monotonic()``): records fetched, or a lag poll done."""
        received = self.fetcher.records_received_at if self.fetcher is not None else None
        times = [t for t in (self.lag_refreshed_at, received) if t is not None]
        return max(times, default=None)

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
        answered = self.kafka_answered_at()
        fresh = answered is not None and time.monotonic() - answered < 3 * self.settings.health.lag_interval_s
        checks["kafka"] = "ok" if fresh else "no recent answer"
        probes = await asyncio.gather(*(self._check(sink) for sink in self.sinks))
        checks.update((sink.name, result) for sink, result in zip(self.sinks, probes, strict=True))
        ready = (
            bool(assigned)
            and checks["rebalancing"] == "no"
            and checks["kafka"] == "ok"
            and all(result == "ok" for result in probes)
        )
        return ready, {"status": "ready" if ready else "not ready", "checks": checks}

    async def _check(self, sink: Sink) -> str:
        """"ok" if ``sink`` took a batch within :data:`LANDED_RECENTLY_S`, else its probe's result."""
        since = time.monotonic() - LANDED_RECENTLY_S
        if any(landing.written_at.get(sink, since - 1) >= since for landing in self.landings.values()):
            return "ok"
        return await self._probe(sink.probe())

    @staticmethod
    async def _probe(check: Any) -> str:
        try:
            await asyncio.wait_for(check, PROBE_TIMEOUT_S)
            return "ok"
        except Exception as exc:  # noqa: BLE001 - any failure is the answer of the probe
            return f"failed: {type(exc).__name__}: {exc}"[:200]
