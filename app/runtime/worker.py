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
from app.core.feeds import Feed, derivation_source, derived_feeds, feeds_of_role, load_feeds
from app.core.retry import Backoff
from app.core.security import faust_broker_credentials, kafka_client_options, request_size_limit
from app.core.settings import Settings
from app.core.sink import Sink
from app.derived.sink import DerivedStreamSink
from app.exports.jobs import ExportJobs
from app.exports.web import mount_exports
from app.lake.sink import LakeSink
from app.runtime.fetcher import FetchedBatch, StreamFetcher
from app.runtime.health import Health
from app.runtime.landing import FeedLanding
from app.snapshots.service import Snapshotter
from app.snapshots.web import mount_snapshots
from app.tables.rates import load_rates
from app.tables.sink import DeltaSink
from app.warehouse.facts import FactSink
from app.warehouse.sink import WarehouseSink
from models.derived_messages import DerivedMessages

__all__ = ["create_app", "derived_stream_sink", "role_groups"]

logger = logging.getLogger(__name__)


def _broker_urls(bootstrap_servers: str) -> list[str]:
    return [f"kafka://{server.strip()}" for server in bootstrap_servers.split(",") if server.strip()]


def create_app(
    settings: Settings,
    feeds: tuple[Feed, ...] | None = None,
    table_partitions: int | None = None,
    role: str = "all",
) -> faust.App:
    """A configured Faust app; ``feeds`` default to :func:`load_feeds`.

    ``table_partitions`` (the deltas topic's partition count, from
    :func:`~app.ops.topics.ensure_derivation_topics`) turns on the table derivation; without it the
    table feeds land whatever ksqlDB writes to their topics.

    ``role`` (:data:`~app.core.feeds.ROLES`) selects what this process runs: ``streams`` lands the
    stream feeds (and, on the transaction feed, derives the derived streams and the table deltas),
    ``tables`` runs the table derivation and lands the table feeds into the facts, ``all`` both.
    Each role has its own consumer groups (:func:`role_groups`), so the two scale apart.
    """
    all_feeds = feeds if feeds is not None else load_feeds(settings)
    feeds = feeds_of_role(all_feeds, role)
    streams_role, tables_role = role in ("all", "streams"), role in ("all", "tables")
    fetch_group, faust_app_id = role_groups(settings, role)
    for name in settings.local_defaults_in_use():
        logger.warning("%s is the local demo default: set a real secret outside a laptop", name)
    # Faust's own consumer (its group is "<group_id>-control") only reads the dead-letter topic;
    # the stream feeds are fetched in whole batches by the StreamFetcher in group "<group_id>".
    app = faust.App(
        faust_app_id,
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

    lake = LakeSink.from_settings(settings.lake)
    warehouse = WarehouseSink(settings.mysql)
    dead_letters = DeadLetterPublisher(app.producer, settings.dead_letter_topic, connector=settings.kafka.group_id)
    backoff = Backoff(settings.errors.retry_backoff_ms / 1000, settings.errors.retry_backoff_max_ms / 1000)
    facts = FactSink(settings.mysql, dead_letters)
    source = derivation_source(all_feeds)
    deltas = (
        DeltaSink(settings.mysql, kafka_client_options(settings.kafka), settings.table_deltas_topic, table_partitions,
                  load_rates(settings.tables.exchange_rates_file))
        if source is not None and table_partitions and streams_role
        else None
    )
    if table_partitions and tables_role:
        register_table_agent(
            app,
            settings.table_deltas_topic,
            table_partitions,
            {f.table: f.topic for f in all_feeds if f.table},
            kafka_client_options(settings.kafka),
        )
    derived = derived_stream_sink(settings, all_feeds) if streams_role else None
    uses_warehouse = any(feed.warehouse or feed.is_table for feed in feeds)
    uses_lake = any(not feed.is_table for feed in feeds)

    def sinks_of(feed: Feed) -> list[Sink]:
        if feed.is_table:
            return [facts]
        sinks: list[Sink] = [lake, warehouse] if feed.warehouse else [lake]
        if feed is source:
            sinks += [sink for sink in (deltas, derived) if sink is not None]
        return sinks

    landings, agents = [], {}
    for feed in feeds:
        landing = FeedLanding(feed, sinks_of(feed), dead_letters, backoff)
        agents[feed.topic] = register_stream_agent(app, feed, landing)
        landings.append(landing)
    if streams_role:
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
        if derived is not None and feed is source:
            positions.append(await derived.position(feed, partition))
        return min(positions)

    fetcher = StreamFetcher(settings, feeds, deliver, held_through, group_id=fetch_group)

    @app.task
    async def _fetch_streams() -> None:
        try:
            if derived is not None:
                await derived.start()
            await fetcher.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            # Without its fetcher the worker lands nothing: exit, and let the restart retry.
            logger.critical("stream fetcher failed, exiting", exc_info=True)
            logging.shutdown()
            os._exit(EXIT_UNEXPECTED)

    health = Health(settings, landings, lake if uses_lake else None, warehouse if uses_warehouse else None, fetcher)
    _mount_health(app, health)
    snapshotter = Snapshotter(settings)
    mount_snapshots(app, settings, snapshotter)
    exports = ExportJobs(settings)
    mount_exports(app, settings, exports)

    @app.on_before_shutdown.connect
    async def _stop(_app: faust.App, **_: object) -> None:
        fetcher.stop()
        await health.close()
        await snapshotter.close()
        await exports.close()
        await warehouse.stop()
        await facts.stop()
        if deltas is not None:
            await deltas.stop()
        if derived is not None:
            await derived.stop()

    return app


def role_groups(settings: Settings, role: str) -> tuple[str, str]:
    """The stream fetcher's consumer group and the Faust app id (its group) of a worker of ``role``.

    ``all`` and ``streams`` fetch in ``<group_id>``; ``tables`` fetches the table feeds in
    ``<group_id>-tables``. The Faust app of ``all`` and ``tables`` is ``<group_id>-control`` (the
    table agent and the state changelogs are named after it); ``streams`` has its own,
    ``<group_id>-streams-control``: Faust's assignor spreads every topic of its group over every
    member, so members running different agents must not share one.
    """
    group = settings.kafka.group_id
    if role == "tables":
        return f"{group}-tables", settings.faust_app_id
    if role == "streams":
        return group, f"{group}-streams-control"
    return group, settings.faust_app_id


def derived_stream_sink(settings: Settings, feeds: tuple[Feed, ...]) -> DerivedStreamSink | None:
    """The derived-stream sink of the transaction feed, when ``streams.derive`` is on and feeds name derivations."""
    outputs = {derivation: feed.topic for derivation, feed in derived_feeds(feeds).items()}
    if not settings.derives_streams or not outputs or derivation_source(feeds) is None:
        return None
    return DerivedStreamSink(
        kafka_client_options(settings.kafka),
        settings.derived_streams_group,
        outputs,
        DerivedMessages(outputs, settings.anonymization.key.get_secret_value().encode(), settings.blacklist),
        transaction_timeout_ms=settings.streams.transaction_timeout_ms,
        position_refresh_s=settings.streams.position_refresh_s,
    )


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
