"""Builds the Faust app: one stream agent per feed, the sinks, the dead-letter publisher, /metrics."""

from __future__ import annotations

import logging

import faust
from faust.sensors.prometheus import setup_prometheus_sensors

from agents.streams import register_stream_agent
from app.dead_letters import DeadLetterPublisher
from app.feeds import Feed, load_feeds
from app.landing import FeedLanding
from app.retry import Backoff
from app.settings import Settings
from app.sinks.base import Sink
from app.sinks.lake import LakeSink
from app.sinks.warehouse import WarehouseSink

__all__ = ["create_app"]

logger = logging.getLogger(__name__)


def _broker_urls(bootstrap_servers: str) -> list[str]:
    return [f"kafka://{server.strip()}" for server in bootstrap_servers.split(",") if server.strip()]


def create_app(settings: Settings, feeds: tuple[Feed, ...] | None = None) -> faust.App:
    """A configured Faust app; ``feeds`` default to :func:`load_feeds`."""
    feeds = feeds if feeds is not None else load_feeds(settings)
    app = faust.App(
        settings.kafka.group_id,
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
        stream_buffer_maxsize=max(4096, 2 * settings.batching.flush_size),
    )
    setup_prometheus_sensors(app, name_prefix="faust")

    lake = LakeSink(settings.lake.root, settings.lake.compression)
    warehouse = WarehouseSink(settings.mysql)
    dead_letters = DeadLetterPublisher(app.producer, settings.dead_letter_topic, connector=settings.kafka.group_id)
    backoff = Backoff(settings.errors.retry_backoff_ms / 1000, settings.errors.retry_backoff_max_ms / 1000)
    sinks_in_use: list[Sink] = [lake]

    for feed in feeds:
        sinks: list[Sink] = [lake]
        if feed.warehouse:
            sinks.append(warehouse)
            if warehouse not in sinks_in_use:
                sinks_in_use.append(warehouse)
        register_stream_agent(app, feed, FeedLanding(feed, sinks, dead_letters, backoff), settings.batching)

    @app.on_before_shutdown.connect
    async def _stop_sinks(_app: faust.App, **_: object) -> None:
        for sink in sinks_in_use:
            await sink.stop()

    return app
