"""Builds the Faust app: the sinks, one stream agent per feed, the table agent, the fetcher, the web views.

The pieces and their order (the data flow, :doc:`docs/architecture.md`):

1. :func:`~app.runtime.sinks.build_sinks` -- one instance of every sink the feeds name;
2. one :class:`~app.runtime.landing.FeedLanding` and one stream agent (:mod:`agents.streams`) per feed;
3. the table agent (:mod:`agents.tables`) when the worker derives the tables;
4. the :class:`~app.runtime.fetcher.StreamFetcher`, started once every sink has started, which hands
   whole batches to the agents and resumes each partition from its sinks' lowest position;
5. health, metrics, and the snapshot and export endpoints;
6. the lake's maintenance schedule (:mod:`app.lake.schedule`: compaction of closed days, vacuum).
"""

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
from app.core.feeds import Feed, load_feeds
from app.core.retry import Backoff
from app.core.security import faust_broker_credentials, kafka_client_options, request_size_limit
from app.core.settings import Settings
from app.exports.jobs import ExportJobs
from app.exports.web import mount_exports
from app.lake.schedule import MaintenanceSchedule
from app.runtime.fetcher import FetchedBatch, StreamFetcher
from app.runtime.health import Health
from app.runtime.landing import FeedLanding
from app.runtime.sinks import SinkSet, build_sinks
from app.snapshots.service import Snapshotter
from app.snapshots.web import mount_snapshots

__all__ = ["create_app"]

logger = logging.getLogger(__name__)


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
    app = _faust_app(settings)
    dead_letters = DeadLetterPublisher(app.producer, settings.dead_letter_topic, connector=settings.kafka.group_id)
    backoff = Backoff(settings.errors.retry_backoff_ms / 1000, settings.errors.retry_backoff_max_ms / 1000)
    sinks = build_sinks(settings, feeds, dead_letters, table_partitions)
    if "deltas" in sinks.by_name and table_partitions:
        register_table_agent(
            app,
            settings.table_deltas_topic,
            table_partitions,
            {f.table: f.topic for f in feeds if f.table},
            kafka_client_options(settings.kafka),
        )
    landings = [FeedLanding(feed, sinks.of(feed), dead_letters, backoff) for feed in feeds]
    agents = {landing.feed.topic: register_stream_agent(app, landing.feed, landing) for landing in landings}
    register_dead_letter_monitor(app, settings.dead_letter_topic)

    async def deliver(batch: FetchedBatch) -> None:
        await agents[batch.feed.topic].channel.hand_over(batch)

    fetcher = StreamFetcher(settings, feeds, deliver, sinks.position)
    _run_fetcher(app, fetcher, sinks, backoff)
    health = Health(settings, landings, sinks, fetcher)
    _mount_health(app, health)
    snapshotter, exports = Snapshotter(settings), ExportJobs(settings)
    mount_snapshots(app, settings, snapshotter)
    mount_exports(app, settings, exports)
    maintenance = MaintenanceSchedule(settings)
    if settings.lake.compaction.enabled and "lake" in sinks.by_name:
        _run_maintenance(app, maintenance)

    @app.on_before_shutdown.connect
    async def _stop(_app: faust.App, **_: object) -> None:
        fetcher.stop()
        await health.close()
        await snapshotter.close()
        await exports.close()
        await maintenance.close()
        await sinks.stop()

    return app


def _faust_app(settings: Settings) -> faust.App:
    """The Faust app of the settings: raw bytes in and out, Kafka's own naming for the knobs.

    Faust's own consumer (its group is ``<group_id>-control``) reads only the dead-letter topic
    and, when deriving, the deltas; the stream feeds are fetched in whole batches by the
    :class:`StreamFetcher` in group ``<group_id>``.
    """
    app = faust.App(
        settings.faust_app_id,
        broker=[f"kafka://{server.strip()}" for server in settings.kafka.bootstrap_servers.split(",") if server.strip()],
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
    return app


def _run_fetcher(app: faust.App, fetcher: StreamFetcher, sinks: SinkSet, backoff: Backoff) -> None:
    @app.task
    async def _fetch_streams() -> None:
        try:
            await sinks.start(backoff)
            await fetcher.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            # Without its fetcher the worker lands nothing: exit, and let the restart retry.
            logger.critical("stream fetcher failed, exiting", exc_info=True)
            logging.shutdown()
            os._exit(EXIT_UNEXPECTED)


def _run_maintenance(app: faust.App, maintenance: MaintenanceSchedule) -> None:
    @app.task
    async def _lake_maintenance() -> None:
        await maintenance.run_forever(first_delay_s=min(30.0, maintenance.interval_s))


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
