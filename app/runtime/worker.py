"""Builds the Faust app: the sinks, one stream agent per feed, the table agent, the fetcher, the web views.

The pieces and their order (the data flow, :doc:`docs/architecture.md`):

1. :func:`~app.runtime.sinks.build_sinks` -- one instance of every sink the feeds name;
2. one :class:`~app.runtime.landing.FeedLanding` and one stream agent (:mod:`agents.streams`) per feed;
3. the table agent (:mod:`agents.tables`) when the worker derives the tables;
4. the :class:`~app.runtime.fetcher.StreamFetcher`, started once every sink has started, which hands
   whole batches to the agents and resumes each partition from its sinks' lowest position; it
   runs in :class:`StreamPath`, which starts with the app, not after Faust's table recovery;
5. health, metrics, and the snapshot and export endpoints.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import faust
import mode
from faust.sensors.prometheus import setup_prometheus_sensors
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from agents.dead_letters import register_dead_letter_monitor
from agents.streams import EXIT_UNEXPECTED, register_stream_agent
from agents.tables import register_table_agent
from app.core import metrics
from app.core.dead_letters import DeadLetterPublisher
from app.core.feeds import Feed, derivation_source, feeds_of_role, load_feeds
from app.core.retry import Backoff
from app.core.security import faust_broker_credentials, request_size_limit
from app.core.settings import Settings
from app.exports.jobs import ExportJobs
from app.exports.web import mount_exports
from app.lake.schedule import MaintenanceSchedule
from app.runtime.fetcher import FetchedBatch, StreamFetcher, leave_group_on_stop
from app.runtime.health import Health
from app.runtime.landing import FeedLanding
from app.runtime.sinks import SinkSet, build_sinks
from app.snapshots.service import Snapshotter
from app.snapshots.web import mount_snapshots

__all__ = ["create_app", "role_groups"]

logger = logging.getLogger(__name__)


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
    tables_role = role in ("all", "tables")
    fetch_group, faust_app_id = role_groups(settings, role)
    for name in settings.local_defaults_in_use():
        logger.warning("%s is the local demo default: set a real secret outside a laptop", name)
    app = _faust_app(settings, faust_app_id)
    dead_letters = DeadLetterPublisher(app.producer, settings.dead_letter_topic, connector=settings.kafka.group_id)
    backoff = Backoff(settings.errors.retry_backoff_ms / 1000, settings.errors.retry_backoff_max_ms / 1000)
    sinks = build_sinks(settings, feeds, dead_letters, table_partitions)
    if table_partitions and tables_role and derivation_source(all_feeds) is not None:
        register_table_agent(app, settings, {f.table: f.topic for f in all_feeds if f.table})
    landings = [FeedLanding(feed, sinks.of(feed), dead_letters, backoff) for feed in feeds]
    agents = {landing.feed.topic: register_stream_agent(app, landing.feed, landing) for landing in landings}
    register_dead_letter_monitor(
        app, settings.dead_letter_topic, None if role == "all" else [feed.topic for feed in feeds]
    )

    async def deliver(batch: FetchedBatch) -> None:
        await agents[batch.feed.topic].channel.hand_over(batch)

    fetcher = StreamFetcher(settings, feeds, deliver, sinks.position, group_id=fetch_group)
    health = Health(settings, landings, sinks, fetcher)
    app.add_dependency(StreamPath(fetcher, sinks, backoff, health))
    _mount_health(app, health)
    snapshotter, exports = Snapshotter(settings), ExportJobs(settings)
    mount_snapshots(app, settings, snapshotter)
    mount_exports(app, settings, exports)
    maintenance = MaintenanceSchedule(settings)
    if settings.lake.compaction.enabled and "lake" in sinks.by_name:

        @app.task
        async def _lake_maintenance() -> None:
            await maintenance.run_forever(first_delay_s=min(30.0, maintenance.interval_s))

    @app.on_before_shutdown.connect
    async def _stop(_app: faust.App, **_: object) -> None:
        fetcher.stop()
        _leave_faust_group_on_stop(app)
        await health.close()
        await snapshotter.close()
        await exports.close()
        await maintenance.close()
        await sinks.stop()

    return app


def role_groups(settings: Settings, role: str) -> tuple[str, str]:
    """The stream fetcher's consumer group and the Faust app id (its group) of a worker of ``role``.

    ``all`` and ``streams`` fetch in ``<group_id>``; ``tables`` fetches the table feeds in
    ``<group_id>-facts`` (``<group_id>-tables`` is the table agent's group on the deltas). The Faust app of ``all`` and ``tables`` is ``<group_id>-control`` (the
    table agent and the state changelogs are named after it); ``streams`` has its own,
    ``<group_id>-streams-control``: Faust's assignor spreads every topic of its group over every
    member, so members running different agents must not share one.
    """
    group = settings.kafka.group_id
    if role == "tables":
        return f"{group}-facts", settings.faust_app_id
    if role == "streams":
        return group, f"{group}-streams-control"
    return group, settings.faust_app_id


def _faust_app(settings: Settings, app_id: str) -> faust.App:
    """The Faust app of the settings: raw bytes in and out, Kafka's own naming for the knobs.

    Faust's own consumer (its group is ``<group_id>-control``) reads only the dead-letter topic;
    the stream feeds are fetched in whole batches by the :class:`StreamFetcher` in group
    ``<group_id>``, the deltas by the table agent in group ``<group_id>-tables``. All three are
    static members under ``kafka.group_instance_id`` when it is set (an instance id is unique per
    group, so the groups share it).
    """
    app = faust.App(
        app_id,
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
        consumer_group_instance_id=settings.kafka.group_instance_id,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        topic_allow_declare=False,
        topic_disable_leader=True,
        broker_credentials=faust_broker_credentials(settings.kafka),
        web_application_options={"middlewares": [request_size_limit(settings.web.max_request_bytes)]},
        # Faust's /table/{name}/{key}/ would serve the derived tables' state (per-user totals) to
        # anyone reaching the port, and /router/ the partition map; txlake's own views replace them.
        web_tables_enabled=False,
        web_router_enabled=False,
    )
    if settings.web.faust_sensors:
        setup_prometheus_sensors(app, name_prefix="faust")
    else:
        app.page("/metrics")(_metrics_view)
    return app



async def _metrics_view(web: Any, request: Any) -> Any:
    """txlake's own metrics only (Faust's per-message sensors off)."""
    return web.bytes(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)


class StreamPath(mode.Service):
    """The stream path beside Faust: the fetcher and the lag poll, running from the app's start.

    Faust starts ``@app.task`` and ``@app.timer`` only after table recovery, which waits for its
    own consumer to join its group and replay every changelog: the stream feeds need neither,
    and neither does the lag poll behind ``/readyz``. Added to the app as a dependency, this
    service starts with the app; the fetcher's first batches wait only for the feed agents.
    """

    def __init__(self, fetcher: StreamFetcher, sinks: SinkSet, backoff: Backoff, health: Health, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fetcher = fetcher
        self.sinks = sinks
        self.backoff = backoff
        self.health = health

    async def on_start(self) -> None:
        self.add_future(self._fetch_streams())
        self.add_future(self._poll_lag())

    async def _fetch_streams(self) -> None:
        try:
            await self.sinks.start(self.backoff)
            await self.fetcher.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            # Without its fetcher the worker lands nothing: exit, and let the restart retry.
            logger.critical("stream fetcher failed, exiting", exc_info=True)
            logging.shutdown()
            os._exit(EXIT_UNEXPECTED)

    async def _poll_lag(self) -> None:
        """Poll at once (readiness needs an answer from Kafka), then every ``lag_interval_s``."""
        while not self.should_stop:
            await self.health.refresh_lag()
            await self.sleep(self.health.settings.health.lag_interval_s)


def _leave_faust_group_on_stop(app: faust.App) -> None:
    """Faust's consumer leaves its group on a graceful stop, static member or not (see the fetcher)."""
    thread = getattr(app.consumer, "_thread", None)  # Faust keeps its aiokafka consumer here
    consumer = getattr(thread, "_consumer", None)
    if consumer is not None:
        leave_group_on_stop(consumer)


def _mount_health(app: faust.App, health: Health) -> None:
    @app.timer(interval=health.settings.health.lag_interval_s, name="txlake.producer_buffer")
    async def _sample_producer_buffer() -> None:
        metrics.PRODUCER_BUFFER.set(app.producer.buffer.size)

    @app.page("/livez")
    async def livez(web: Any, request: Any) -> Any:
        ok, body = health.liveness()
        return web.json(body, status=200 if ok else 503)

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        ok, body = await health.readiness()
        return web.json(body, status=200 if ok else 503)
