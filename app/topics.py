"""Creating the feeds' topics and the dead-letter topic (demo, tests, benchmark, first deployment)."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from app.feeds import Feed
from app.security import kafka_client_options
from app.settings import Settings

__all__ = ["create_topics"]


async def create_topics(settings: Settings, feeds: tuple[Feed, ...], partitions: int, replication: int = 1) -> list[str]:
    """Create every feed topic and the dead-letter topic that does not exist yet; returns those created."""
    admin = AIOKafkaAdminClient(**kafka_client_options(settings.kafka))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [feed.topic for feed in feeds] + [settings.dead_letter_topic]
        missing = [name for name in dict.fromkeys(wanted) if name not in existing]
        if missing:
            try:
                await admin.create_topics([NewTopic(name, partitions, replication) for name in missing])
            except TopicAlreadyExistsError:
                pass  # created concurrently by another process
        return missing
    finally:
        await admin.close()
