"""The lake's offset ledger: one small JSON object per (dataset, topic, partition).

    <root>/_txlake/ledger/<dataset>/<topic>/<partition>.json

It holds ``landed_through`` -- the highest offset the lake holds for the partition -- and the
staged → final file moves of the last committed batch. Replacing it atomically is the commit
point of the lake sink's protocol (:mod:`app.lake.sink`); readers (``txlake progress``,
``verify``, the export day swap) read it without side effects.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path

from app.core.feeds import Feed
from app.core.settings import LakeSettings
from app.lake.storage import CONTROL_DIR, LakeStorage, LocalStorage, is_s3_uri, open_lake_storage

__all__ = ["LakeLedger", "LedgerEntry", "ledger_key", "ledger_path", "read_landed_through", "staging_key"]


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """What the lake holds for one (dataset, topic, partition).

    ``landed_through`` is the highest offset covered; ``moves`` are the
    (staged, final) moves of the last committed batch, relative to the lake
    root, replayed by recovery if a crash interrupted them.
    """

    landed_through: int = -1
    moves: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> bytes:
        return json.dumps({"landed_through": self.landed_through, "moves": self.moves}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> LedgerEntry:
        raw = json.loads(data)
        return cls(int(raw["landed_through"]), tuple((str(s), str(f)) for s, f in raw.get("moves", ())))


def ledger_key(dataset: str, topic: str, partition: int) -> str:
    return f"{CONTROL_DIR}/ledger/{dataset}/{topic}/{partition}.json"


def staging_key(dataset: str, topic: str, partition: int) -> str:
    return f"{CONTROL_DIR}/staging/{dataset}/{topic}/{partition}"


def ledger_path(root: Path | str, dataset: str, topic: str, partition: int) -> Path | str:
    """Where the ledger of (dataset, topic, partition) lives under the lake ``root`` (a Path, or an S3 URI)."""
    if is_s3_uri(root):
        return f"{str(root).rstrip('/')}/{ledger_key(dataset, topic, partition)}"
    return Path(root) / ledger_key(dataset, topic, partition)


def _as_storage(lake: LakeStorage | LakeSettings | Path | str) -> LakeStorage:
    if isinstance(lake, LakeStorage):
        return lake
    if isinstance(lake, LakeSettings):
        return open_lake_storage(lake)
    if is_s3_uri(lake):  # a bare URI: default S3 options (AWS credential chain)
        return open_lake_storage(LakeSettings(root=lake))
    return LocalStorage(lake)


def read_landed_through(lake: LakeStorage | LakeSettings | Path | str, dataset: str, topic: str, partition: int) -> int:
    """The committed ledger position, read without recovering anything (safe while a worker runs).

    ``lake`` is a storage (cheapest when reading many ledgers), the lake settings, or a root
    (a local path, or an ``s3://`` URI read with the default AWS options).
    """
    return _read_ledger(_as_storage(lake), ledger_key(dataset, topic, partition)).landed_through


def _read_ledger(storage: LakeStorage, key: str, attempts: int = 5) -> LedgerEntry:
    """The ledger at ``key`` (empty if none).

    A reader racing the writer can see a torn object on S3: an object store serves a large
    read as several ranged GETs, and the ledger may be replaced between two of them. A torn
    ledger does not parse; read it again.
    """
    for attempt in range(attempts):
        data = storage.read(key)
        if data is None:
            return LedgerEntry()
        try:
            return LedgerEntry.from_json(data)
        except ValueError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def _write_durably(storage: LakeStorage, path: str, data: bytes) -> None:
    """The commit point: replace the ledger at ``path`` atomically (durably, on a local lake with fsync)."""
    storage.write_atomic(path, data)


class LakeLedger:
    """The ledgers of one lake (the :class:`~app.core.sink.Ledger` of the lake sink)."""

    def __init__(self, storage: LakeStorage) -> None:
        self.storage = storage

    async def read(self, feed: Feed, partition: int) -> int:
        entry = await asyncio.to_thread(self.entry, feed.dataset, feed.topic, partition)
        return entry.landed_through

    def entry(self, dataset: str, topic: str, partition: int) -> LedgerEntry:
        """The committed entry (empty if none), read without recovering anything."""
        return _read_ledger(self.storage, ledger_key(dataset, topic, partition))

    def commit(self, dataset: str, topic: str, partition: int, entry: LedgerEntry) -> None:
        """Replace the entry atomically: the lake sink's commit point."""
        _write_durably(self.storage, ledger_key(dataset, topic, partition), entry.to_json())
