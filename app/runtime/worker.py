"""Builds the Faust app: one stream agent per feed, the sinks, the dead-letter publisher, /metrics."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import faust
from faust.sensors.prometheus import setup_prometheus_sensors
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from agents.dead_letters import register_dead_letter_monitor
from agents.streams import EXIT_UNEXPECTED, register_stream_agent
from agents.tables import register_table_agent
from app.core.dead_letters import DeadLetterPublisher
from app.core.feeds import Feed, derivation_source, load_feeds
from app.core.retry import Backoff
from app.core.security import faust_broker_credentials, kafka_client_options, request_size_limit
from app.core.settings import Settings
from app.core.sink import Sink
from app.exports.jobs import ExportJobs
from app.exports.web import mount_exports
from app.lake.formats import lake_sink
from app.lake.schedule import MaintenanceSchedule
from app.runtime.fetcher import FetchedBatch, StreamFetcher
from app.runtime.health import Health
from app.runtime.landing import FeedLanding
from app.snapshots.service import Snapshotter
from app.snapshots.web import mount_snapshots
from app.tables.rates import load_rates
from app.tables.sink import DeltaSink
from app.warehouse.facts import FactSink
from app.warehouse.sink import WarehouseSink

__all__ = ["create_app"]

logger = logging.getLogger(__name__)


def _broker_urls(bootstrap_servers: str) -> list[str]:
    return [f"kafka://{server.strip()}" for server in bootstrap_servers.split(",") if server.strip()]


def create_app(
    settings: Settings, feeds: tuple[Feed, ...] | None = None, table_partitions: int | None = None
) -> faust.App:
    """A configured Faust app; ``feeds`` default to :func:`load_feeds`.

    ``table_partitions`` (the deltas topic's partition count, from
    :func:`~app.ops.topics.ensure_derivation_topics`) turns on the table derivation; without it the
    table feeds land whatever ksqlDB writes to their topics.
    """
    feeds = feeds if feeds is not None else load_feeds(settings)
    for name in settings.local_defaults_in_use():
        logger.warning("%s is the local demo default: set a real secret outside a laptop", name)
    # Faust's own consumer (its group is "<group_id>-control") only reads the dead-letter topic;
    # the stream feeds are fetched in whole batches by the StreamFetcher in group "<group_id>".
    app = faust.App(
        settings.faust_app_id,
        broker=_broker_urls(settings.kafka.bootstrap_servers),
        value_serializer="raw",
        key_serializer="raw",
        web_host=settings.web.host,
        web_bind=settings.web.host,
        web_port=settings.web.port,
        datadir=str(settings.datadir),
        broker_commit_interval=settings.kafka.commit_interval_ms / 1000,
        broker_session_timeout=settings.kafka.session_timeout_ms / 1000,
        broker_heartbeat_interval=settings.kafka.heartbeat_interval_ms / 1000,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        topic_allow_declare=False,
        topic_disable_leader=True,
        broker_credentials=faust_broker_credentials(settings.kafka),
        web_application_options={"middlewares": [request_size_limit(settings.web.max_request_bytes)]},
    )
    if settings.web.faust_sensors:
        setup_prometheus_sensors(app, name_prefix="faust")
    else:
        app.page("/metrics")(_metrics_view)

    lake = lake_sink(settings.lake)  # hive Parquet files, or Delta tables (lake.format)
    warehouse = WarehouseSink(settings.mysql)
    dead_letters = DeadLetterPublisher(app.producer, settings.dead_letter_topic, connector=settings.kafka.group_id)
    backoff = Backoff(settings.errors.retry_backoff_ms / 1000, settings.errors.retry_backoff_max_ms / 1000)
    facts = FactSink(settings.mysql, dead_letters)
    source = derivation_source(feeds) if table_partitions else None
    deltas = (
        DeltaSink(settings.mysql, kafka_client_options(settings.kafka), settings.table_deltas_topic, table_partitions,
                  load_rates(settings.tables.exchange_rates_file))
        if source is not None and table_partitions
        else None
    )
    if deltas is not None:
        register_table_agent(
            app,
            settings.table_deltas_topic,
            table_partitions,
            {f.table: f.topic for f in feeds if f.table},
            kafka_client_options(settings.kafka),
        )
    uses_warehouse = any(feed.warehouse or feed.is_table for feed in feeds)

    def sinks_of(feed: Feed) -> list[Sink]:
        if feed.is_table:
            return [facts]
        sinks: list[Sink] = [lake, warehouse] if feed.warehouse else [lake]
        return [*sinks, deltas] if deltas is not None and feed is source else sinks

    landings, agents = [], {}
    for feed in feeds:
        landing = FeedLanding(feed, sinks_of(feed), dead_letters, backoff)
        agents[feed.topic] = register_stream_agent(app, feed, landing)
        landings.append(landing)
    register_dead_letter_monitor(app, settings.dead_letter_topic)

    async def deliver(batch: FetchedBatch) -> None:
        await agents[batch.feed.topic].channel.hand_over(batch)

    async def held_through(feed: Feed, partition: int) -> int:
        """What every sink of the feed holds for the partition: the lowest ledger position."""
        if feed.is_table:
            return await facts.landed_through(feed.name, feed.topic, partition)
        lake.forget(feed.dataset, feed.topic, partition)  # another worker may have moved it on
        positions = [await asyncio.to_thread(lake.landed_through, feed.dataset, feed.topic, partition)]
        if feed.warehouse:
            positions.append(await warehouse.landed_through(feed.name, feed.topic, partition))
        if deltas is not None and feed is source:
            positions.append(await deltas.held_through(feed.name, feed.topic, partition))
        return min(positions)

    fetcher = StreamFetcher(settings, feeds, deliver, held_through)

    @app.task
    async def _fetch_streams() -> None:
        try:
            await fetcher.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            # Without its fetcher the worker lands nothing: exit, and let the restart retry.
            logger.critical("stream fetcher failed, exiting", exc_info=True)
            logging.shutdown()
            os._exit(EXIT_UNEXPECTED)

    health = Health(settings, landings, lake, warehouse if uses_warehouse else None, fetcher)
    _mount_health(app, health)
    snapshotter = Snapshotter(settings)
    mount_snapshots(app, settings, snapshotter)
    exports = ExportJobs(settings)
    mount_exports(app, settings, exports)
    maintenance = MaintenanceSchedule(settings)
    if settings.lake.compaction.enabled:

        @app.task
        async def _lake_maintenance() -> None:
            await maintenance.run_forever(first_delay_s=min(30.0, maintenance.interval_s))

    @app.on_before_shutdown.connect
    async def _stop(_app: faust.App, **_: object) -> None:
        fetcher.stop()
        await health.close()
        await snapshotter.close()
        await exports.close()
        await maintenance.close()
        await lake.stop()
        await warehouse.stop()
        await facts.stop()
        if deltas is not None:
            await deltas.stop()

    return app


async def _metrics_view(web: Any, request: Any) -> Any:
    """txlake's own metrics only (Faust's per-message sensors off)."""
    return web.bytes(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)


def _mount_health(app: faust.App, health: Health) -> None:
    @app.timer(interval=health.settings.health.lag_interval_s, name="txlake.consumer_lag")
    async def _poll_lag() -> None:
        await health.refresh_lag()

    @app.page("/livez")
    async def livez(web: Any, request: Any) -> Any:
        ok, body = health.liveness()
        return web.json(body, status=200 if ok else 503)

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        ok, body = await health.readiness()
        return web.json(body, status=200 if ok else 503)
