"""Delta messages: a batch of transactions, pre-aggregated per table key and routed to its partition.

Deriving the four tables is a re-keying (transactions are keyed by transaction id; the tables by
user and type, payment method, product). Instead of one repartition message per transaction and
table, each landed batch of the transaction stream becomes at most one *delta message* per
partition of the deltas topic (split when large), carrying, per table and key, the contributions
of the batch's transactions (see :mod:`models.aggregates`). A key is routed to partition
``murmur2(key bytes) % partitions`` -- Kafka's default partitioner, so with equal partition counts a
key's deltas, its table state and its changelog record share a partition number.

Value: ``{"t": {table: {key: [contribution, ...]}}}`` as compact JSON; keys are the tables' key
bytes as text (the ksqlDB wire key).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

import msgspec
from aiokafka.partitioner import murmur2

from models.aggregates import contributions, group_by_key
from models.transaction import Transaction

__all__ = ["MAX_KEYS_PER_MESSAGE", "delta_messages", "read_delta"]

MAX_KEYS_PER_MESSAGE = 2000
"""Keys per delta message at most (keeps messages far below Kafka's 1 MiB default limit)."""

Delta = dict[str, dict[str, list[list[Any]]]]


def partition_of(key: bytes, partitions: int) -> int:
    """Kafka's default partition for ``key`` among ``partitions``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def delta_messages(
    records: Sequence[Transaction],
    offsets: Sequence[int],
    partition: int,
    rates: Mapping[str, Decimal],
    partitions: int,
) -> Iterator[tuple[int, bytes]]:
    """``(deltas partition, value)`` for the transactions of one source ``partition`` batch.

    Per deltas partition, messages come in the order the contributions must be applied; a key's
    contributions are never split over two messages.
    """
    routed: dict[int, Delta] = {}
    grouped = group_by_key(
        triple
        for record, offset in zip(records, offsets, strict=True)
        for triple in contributions(record, partition, offset, rates)
    )
    for table, keys in grouped.items():
        for key, contributed in keys.items():
            target = routed.setdefault(partition_of(key, partitions), {})
            target.setdefault(table, {})[key.decode()] = contributed
    for target, delta in sorted(routed.items()):
        for chunk in _chunks(delta):
            yield target, json.dumps({"t": chunk}, ensure_ascii=False, separators=(",", ":")).encode()


def _chunks(delta: Delta) -> Iterator[Delta]:
    chunk: Delta = {}
    size = 0
    for table, keys in delta.items():
        for key, contributed in keys.items():
            if size == MAX_KEYS_PER_MESSAGE:
                yield chunk
                chunk, size = {}, 0
            chunk.setdefault(table, {})[key] = contributed
            size += 1
    if chunk:
        yield chunk


_DECODER = msgspec.json.Decoder()


def read_delta(value: bytes) -> Delta:
    """The ``{table: {key: contributions}}`` of a delta message (raises ValueError if malformed)."""
    try:
        document = _DECODER.decode(value)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a txlake delta message: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("t"), dict):
        raise ValueError("not a txlake delta message")
    return document["t"]
