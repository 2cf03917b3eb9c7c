"""The table derivation's state store: per deltas partition, every state table's keys, and its restore.

The state of deltas partition *p* is six maps (:func:`app.tables.state.state_table_names`): one per
ksqlDB table, the product buyers and the progress. Each is backed by partition *p* of a compacted
changelog topic ``<app id>-<name>-changelog`` in **Faust's table changelog format** -- the format
the earlier Faust-table implementation wrote, so a worker of this version restores the state an
older one derived, and the other way round:

- key: the state key as a JSON string (Python's ``json.dumps``: non-ASCII escaped);
- value: the key's state as JSON (:mod:`models.aggregates`: ``{"wm": {...}, "count": ..., ...}``;
  a buyer entry is ``[partition, offset]``); the progress map's single key is ``str(p)`` and its
  value the last deltas offset whose effects the changelogs hold.

In memory a partition keeps each key's state as the changelog value bytes (``StoredState``):
a third of the memory of decoded dictionaries, and the bytes a flush writes are the bytes it
keeps. :func:`restore` reads the six changelog partitions from their start to their current end
(the last value of each key wins; a null value deletes it).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

from app.tables.state import BUYERS_TABLE, PROGRESS_TABLE, state_table_names

__all__ = [
    "StoredState",
    "changelog_key",
    "changelog_topics",
    "decode_key",
    "decode_state",
    "encode_state",
    "progress_value",
    "restore",
]

logger = logging.getLogger(__name__)

_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder()
RESTORE_POLL_MS = 500
RESTORE_IDLE_POLLS = 20  # a partition that returns nothing this often in a row is read (records removed at its end)


def changelog_topics(app_id: str) -> dict[str, str]:
    """``{state table: changelog topic}`` of a deployment (``app_id``: ``settings.faust_app_id``)."""
    return {name: f"{app_id}-{name}-changelog" for name in state_table_names()}


def changelog_key(key: str) -> bytes:
    """The changelog key bytes of a state key, exactly as Faust's JSON codec writes them.

    Compaction keeps the last record per key *bytes*: writing the same bytes as the older
    implementation keeps one record per key across an upgrade.
    """
    if key.isascii() and "\x7f" not in key:
        return _ENCODER.encode(key)  # the same bytes as json.dumps for these, 3x faster
    return json.dumps(key).encode()


def decode_key(raw: bytes) -> str:
    """The state key of changelog key bytes (raises ValueError if they are not a JSON string)."""
    key = json.loads(raw)
    if not isinstance(key, str):
        raise ValueError(f"changelog key {raw[:80]!r} is not a JSON string")
    return key


encode_state = _ENCODER.encode
"""A state (a JSON-friendly value) as changelog value bytes."""

decode_state = _DECODER.decode
"""The state of changelog value bytes."""


def progress_value(offset: int) -> bytes:
    """The progress map's value: the last deltas offset the changelogs cover."""
    return str(offset).encode()


@dataclass
class StoredState:
    """What the changelogs hold for one deltas partition (as far as this process knows).

    ``tables`` maps each state table to ``{key: changelog value bytes}``; ``applied_through`` is
    the last deltas offset whose effects are in the changelogs (-1: none); ``ends`` is, per
    changelog topic, the next offset of its partition after the records this process read or
    wrote -- if the topic's real end differs, another process wrote to it.
    """

    partition: int
    tables: dict[str, dict[str, bytes]] = field(default_factory=lambda: {name: {} for name in state_table_names()})
    applied_through: int = -1
    ends: dict[str, int] = field(default_factory=dict)

    @property
    def keys(self) -> int:
        """Keys held over every state table."""
        return sum(len(keys) for keys in self.tables.values())


async def restore(client_options: Mapping[str, Any], topics: Mapping[str, str], partition: int) -> StoredState:
    """Read partition ``partition`` of every changelog topic (``{state table: topic}``) up to its end."""
    started = time.monotonic()
    state = StoredState(partition)
    consumer = AIOKafkaConsumer(
        **client_options, enable_auto_commit=False, auto_offset_reset="earliest", isolation_level="read_committed"
    )
    await consumer.start()
    try:
        by_tp = {TopicPartition(topic, partition): name for name, topic in topics.items()}
        consumer.assign(list(by_tp))
        ends = await consumer.end_offsets(list(by_tp))
        await consumer.seek_to_beginning(*by_tp)
        reading = {tp for tp, end in ends.items() if end > 0}
        idle = dict.fromkeys(reading, 0)  # polls in a row that returned nothing
        records = 0
        while reading:
            fetched = await consumer.getmany(*reading, timeout_ms=RESTORE_POLL_MS)
            for tp in reading:
                idle[tp] = 0 if fetched.get(tp) else idle[tp] + 1
                if idle[tp] == RESTORE_IDLE_POLLS:
                    logger.warning("restore: %s[%d] returned nothing at %d of %d; taking it as read",
                                   tp.topic, tp.partition, await consumer.position(tp), ends[tp])
            for tp, messages in fetched.items():
                keys = state.tables[by_tp[tp]]
                for message in messages:
                    if message.offset >= ends[tp]:
                        break
                    key = decode_key(message.key)
                    if message.value is None:
                        keys.pop(key, None)
                    else:
                        keys[key] = message.value
                    records += 1
            reading = {tp for tp in reading if idle[tp] < RESTORE_IDLE_POLLS and await consumer.position(tp) < ends[tp]}
        state.ends = {tp.topic: end for tp, end in ends.items()}
    finally:
        await consumer.stop()
    progress = state.tables[PROGRESS_TABLE].get(str(partition))
    state.applied_through = -1 if progress is None else int(decode_state(progress))
    logger.info(
        "table state of partition %d restored: %d records, %d keys (%d buyers), deltas applied through %d, %.1f s",
        partition, records, state.keys, len(state.tables[BUYERS_TABLE]), state.applied_through,
        time.monotonic() - started,
    )
    return state
