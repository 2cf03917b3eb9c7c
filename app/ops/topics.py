"""Creating the topics: the feeds', the dead-letter topic, and the internals of table derivation.

Table changelog topics are compacted (``cleanup.policy=compact``), as ksqlDB creates them. When
txlake derives the tables (``tables.derive``), it also needs the deltas topic and the table state's
changelog topics (``<app id>-<table>-changelog``, compacted), all with one partition count: the
deltas, the table state and the changelogs are co-partitioned. That count is the table side's own
(``tables.partitions``, or ``txlake topics --table-partitions``; by default the transaction
topic's): the delta sink routes each key by hash over the deltas topic's partitions, whatever the
transaction topic has, so the table derivation scales by its partitions and the stream landing by
the stream topics' (docs/kubernetes.md, "Two Deployments").
"""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from app.core.errors import ConfigurationError
from app.core.feeds import Feed, derivation_source
from app.core.security import kafka_client_options
from app.core.settings import Settings
from app.tables.state import state_table_names

__all__ = ["create_topics", "ensure_derivation_topics"]

_COMPACT = {"cleanup.policy": "compact"}


async def create_topics(
    settings: Settings,
    feeds: tuple[Feed, ...],
    partitions: int,
    replication: int = 1,
    table_partitions: int | None = None,
) -> list[str]:
    """Create every feed topic and the dead-letter topic that does not exist yet; returns those created.

    Stream topics get ``partitions``; table topics (and, when deriving, the deltas and state
    changelog topics) ``table_partitions``, default ``tables.partitions`` or ``partitions``.
    With ``tables.derive`` on, the derivation topics too (see :func:`ensure_derivation_topics`).
    """
    tables = table_partitions or settings.tables.partitions or partitions
    wanted = {feed.topic: (tables, _COMPACT) if feed.is_table else (partitions, None) for feed in feeds}
    wanted[settings.dead_letter_topic] = (partitions, None)
    created = await _create_missing(settings, wanted, replication)
    if settings.tables.derive and derivation_source(feeds) is not None:
        # The topics just created are known without asking: a broker under load may not list a
        # topic yet in the moment after it acknowledged its creation.
        known = {topic: wanted[topic][0] for topic in created}
        created += (await _ensure_derivation(settings, feeds, replication, tables, known))[1]
    return created


async def ensure_derivation_topics(settings: Settings, feeds: tuple[Feed, ...], replication: int = 1) -> int:
    """Create the deltas and state changelog topics if missing; returns their partition count.

    The count is the deltas topic's if it exists, else ``tables.partitions``, else the derivation
    source topic's (which must exist).
    """
    return (await _ensure_derivation(settings, feeds, replication, settings.tables.partitions))[0]


async def _ensure_derivation(
    settings: Settings, feeds: tuple[Feed, ...], replication: int, wanted: int | None,
    known: dict[str, int] | None = None,
) -> tuple[int, list[str]]:
    """``known``: partition counts of topics this process has just created (they count as existing)."""
    source = derivation_source(feeds)
    if source is None:
        raise ConfigurationError("tables.derive is on but no feed names the deltas sink (sinks = [..., \"deltas\"])")
    admin = AIOKafkaAdminClient(**kafka_client_options(settings.kafka))
    await admin.start()
    try:
        counts = {**(known or {}), **await _partition_counts(admin, [source.topic, settings.table_deltas_topic])}
    finally:
        await admin.close()
    if source.topic not in counts:
        raise ConfigurationError(f"topic {source.topic} does not exist: create the topics first (txlake topics)")
    partitions = counts.get(settings.table_deltas_topic) or wanted or counts[source.topic]
    return partitions, await _create_missing(settings, _derivation_topics(settings, partitions), replication)


def _derivation_topics(settings: Settings, partitions: int) -> dict[str, tuple[int, dict[str, str] | None]]:
    app_id = settings.faust_app_id
    topics: dict[str, tuple[int, dict[str, str] | None]] = {settings.table_deltas_topic: (partitions, None)}
    for name in state_table_names():
        topics[f"{app_id}-{name}-changelog"] = (partitions, _COMPACT)
    return topics


async def _partition_counts(admin: AIOKafkaAdminClient, topics: list[str]) -> dict[str, int]:
    """Partition counts of those ``topics`` that exist (never asks for a missing one: that may auto-create it)."""
    existing = set(await admin.list_topics())
    topics = [topic for topic in topics if topic in existing]
    if not topics:
        return {}
    described = await admin.describe_topics(topics)
    return {t["topic"]: len(t["partitions"]) for t in described if not t.get("error_code")}


async def _create_missing(
    settings: Settings, wanted: dict[str, tuple[int, dict[str, str] | None]], replication: int
) -> list[str]:
    admin = AIOKafkaAdminClient(**kafka_client_options(settings.kafka))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(name, wanted[name][0], replication, topic_configs=wanted[name][1] or {}) for name in missing]
                )
            except TopicAlreadyExistsError:
                pass  # created concurrently by another process
        return missing
    finally:
        await admin.close()
