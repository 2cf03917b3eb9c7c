"""The record cache of one deltas partition: the keys a window of delta messages touched.

Like Kafka Streams' record cache (``statestore.cache.max.bytes`` with ``commit.interval.ms``):
delta messages are folded into decoded states held here, each read through to the partition's
:class:`~app.tables.store.StoredState` the first time the window touches its key; a key touched
again in the same window is folded in memory only. :meth:`PartitionCache.drain` hands the
window's keys to the flush (:mod:`app.tables.flush`), which writes each of them once.

A key is *changed* when a fold absorbed a contribution (:meth:`models.aggregates.Aggregator.absorb`);
a key touched only by replayed contributions is unchanged but still *touched*: its output value
is re-sent in case the first send was lost with a crash (the changelog already holds its state).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from app.tables.deltas import read_delta
from app.tables.state import BUYERS_TABLE
from app.tables.store import StoredState, decode_state
from models.aggregates import AGGREGATORS, Buyers
from models.tables import TABLES

__all__ = ["PartitionCache"]

PRODUCTS = "product_purchase_counts"

Entry = list[Any]
"""``[state, changed]``: a touched key's decoded state and whether the window changed it."""


class _BuyerEntries:
    """The buyer entries as :class:`~models.aggregates.Buyers` sees them: the window's over the stored ones."""

    __slots__ = ("dirty", "stored")

    def __init__(self, stored: dict[str, bytes], dirty: dict[str, list[int]]) -> None:
        self.stored, self.dirty = stored, dirty

    def get(self, key: str) -> list[int] | None:
        entry = self.dirty.get(key)
        if entry is not None:
            return entry
        raw = self.stored.get(key)
        return None if raw is None else decode_state(raw)

    def __setitem__(self, key: str, value: list[int]) -> None:
        self.dirty[key] = value


class PartitionCache:
    """The derivation state of one deltas partition this process owns: stored state + the window.

    ``position`` is the next deltas offset to fold; everything below it is folded (in the
    window or in ``stored``); ``stored.applied_through`` is what the changelogs already cover.
    """

    def __init__(self, stored: StoredState) -> None:
        self.stored = stored
        self.position = stored.applied_through + 1
        self.touched: dict[str, dict[str, Entry]] = {table: {} for table in TABLES}
        self.new_buyers: dict[str, list[int]] = {}
        self.touched_keys = 0
        self.window_started: float | None = None  # time.monotonic() of the window's first fold
        self._buyers = Buyers(_BuyerEntries(stored.tables[BUYERS_TABLE], self.new_buyers))

    @property
    def partition(self) -> int:
        return self.stored.partition

    @property
    def unflushed(self) -> bool:
        """Whether offsets were folded that the changelogs do not cover yet."""
        return self.position - 1 > self.stored.applied_through

    def fold(self, offset: int, value: bytes) -> None:
        """Fold the delta message at ``offset`` (raises ValueError if it is not a delta message).

        Contributions at or below a key's watermark change nothing (replays are harmless).
        """
        delta = read_delta(value)
        if self.window_started is None:
            self.window_started = time.monotonic()
        for table, keys in delta.items():
            aggregator = AGGREGATORS.get(table)
            if aggregator is None:
                raise ValueError(f"delta message at {offset} names an unknown table {table!r}")
            touched, stored = self.touched[table], self.stored.tables[table]
            buyers = self._buyers if table == PRODUCTS else None
            for key, contributed in keys.items():
                entry = touched.get(key)
                if entry is None:
                    raw = stored.get(key)
                    entry = touched[key] = [{"wm": {}} if raw is None else decode_state(raw), False]
                    self.touched_keys += 1
                if aggregator.absorb(entry[0], contributed, key, buyers):
                    entry[1] = True
        self.position = offset + 1

    def drain(self) -> tuple[Iterator[tuple[str, str, Any, bool]], dict[str, list[int]]]:
        """Hand over the window and start a new one.

        Returns the touched keys as ``(table, key, state, changed)`` and the new buyer entries;
        the caller writes them (and stores the changed states' bytes in ``stored``).
        """
        touched, buyers = self.touched, self.new_buyers
        self.touched = {table: {} for table in TABLES}
        self.new_buyers = {}
        self._buyers = Buyers(_BuyerEntries(self.stored.tables[BUYERS_TABLE], self.new_buyers))
        self.touched_keys = 0
        self.window_started = None
        entries = ((table, key, entry[0], entry[1]) for table, keys in touched.items() for key, entry in keys.items())
        return entries, buyers
