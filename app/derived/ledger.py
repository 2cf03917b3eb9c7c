"""Where the stream derivation stands: the committed offsets of its own consumer group.

The derivation commits its position *inside* the Kafka transaction that writes the derived
records (``send_offsets_to_transaction``), as Kafka Streams does: the records and the position
become visible together or not at all. The group (``<group_id>-derived-streams``) has no
members; its committed offset on a source partition is the next offset to derive, so the
position -- the highest offset derived -- is that offset minus one. Reading it is safe while
workers run: a transaction's offsets are visible only once it committed.

Standard tools read it too: ``kafka-consumer-groups.sh --describe --group <group_id>-derived-streams``
shows how far behind the derivation is, and ``--reset-offsets`` sets where a new derivation starts
(when switching from ksqlDB: docs/derived-streams.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

if TYPE_CHECKING:
    from app.core.feeds import Feed

__all__ = ["DerivedStreamLedger"]

NOTHING_DERIVED = -1


class DerivedStreamLedger:
    """Reads the derivation's committed positions (one admin client, opened on first use).

    The :class:`~app.core.sink.Ledger` of :class:`~app.derived.sink.DerivedStreamSink`; the sink
    commits through its Kafka transactions, never through this object.
    """

    def __init__(self, client_options: Mapping[str, Any], group_id: str) -> None:
        self.client_options = dict(client_options)  # app.core.security.kafka_client_options
        self.group_id = group_id
        self._admin: AIOKafkaAdminClient | None = None

    async def read(self, feed: Feed, partition: int) -> int:
        """The highest offset of the source feed's ``partition`` derived and committed (-1: none)."""
        return (await self.read_many(feed.topic, [partition]))[partition]

    async def read_many(self, topic: str, partitions: Iterable[int]) -> dict[int, int]:
        """:meth:`read` for several partitions of ``topic`` in one request."""
        wanted = [TopicPartition(topic, p) for p in partitions]
        committed = await self._offsets(wanted)
        positions = {}
        for tp in wanted:
            meta = committed.get(tp)
            positions[tp.partition] = meta.offset - 1 if meta is not None and meta.offset >= 0 else NOTHING_DERIVED
        return positions

    async def ping(self) -> None:
        """Raise unless the group's coordinator answers (the readiness probe)."""
        await self._offsets(None)

    async def _offsets(self, partitions: list[TopicPartition] | None) -> dict[TopicPartition, Any]:
        if self._admin is None:
            admin = AIOKafkaAdminClient(**self.client_options)
            await admin.start()
            self._admin = admin
        try:
            return await self._admin.list_consumer_group_offsets(self.group_id, partitions=partitions)
        except Exception:
            await self.close()  # a fresh connection next time
            raise

    async def close(self) -> None:
        if self._admin is not None:
            admin, self._admin = self._admin, None
            try:
                await admin.close()
            except Exception:  # noqa: BLE001, S110 - closing anyway
                pass
