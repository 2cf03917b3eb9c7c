"""The catalog's view of a stream dataset: which files and rows a reader should read, consistently.

A plain glob over ``streams/<stream>/year=*/month=*/day=*/*.parquet`` sees what the file system
shows at that instant. Two things make that instant inconsistent for a moment:

* a batch spanning several days is committed at once (its ledger) but its day files are moved
  into place one after the other, so a glob can see some of its days and not yet the others;
* on S3, a compaction deletes the replaced objects, then copies its outputs in: a glob in between
  misses those rows (never sees them twice).

:func:`stream_view` gives readers that go through the catalog (``txlake lake files``,
:meth:`StreamView.read`) a view in which every batch is visible all at once and no row is seen twice
or missed:

1. read the active compaction journals, then every ledger of the dataset. Per Kafka partition, the
   *visible position* is the ledger's ``landed_through`` -- unless the last batch's staged files
   are not all moved yet, then the offset before that batch: its rows stay hidden until every one
   of its day files is in place, then appear together;
2. list the day files; on S3, for a day with an active compaction journal, replace the replaced
   files by the journal's outputs (at their final key if already copied, else the staged key);
3. read the journals again: if a compaction committed or finished in between, start over;
4. a reader keeps only rows at or below the visible position of their partition
   (:meth:`StreamView.filter`), and may skip whole files named ``<topic>+<p>+<start>`` above it.

A file may vanish between the view and the read (a compaction replaced it, a staged output was
moved): :meth:`StreamView.read` then takes a new view and reads again. Views are cheap: one listing
of the dataset, one read per ledger and a HEAD per file of each partition's last batch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds

from app.lake.compaction import CompactionJournal, active_journals, list_day_files
from app.lake.files import list_tree, native
from app.lake.ledger import LakeLedger
from app.lake.sink import DATA_FILE_NAME, DayPartition
from app.lake.storage import CONTROL_DIR, LakeStorage, LocalStorage

__all__ = ["StreamView", "ViewFile", "read_stream", "stream_view", "vanished"]

logger = logging.getLogger(__name__)

_ATTEMPTS = 20
_PARTITION_FIELDS = [pa.field("year", pa.int32()), pa.field("month", pa.int32()), pa.field("day", pa.int32())]


@dataclass(frozen=True)
class ViewFile:
    path: str  # lake-relative
    day: DayPartition
    size: int


@dataclass
class StreamView:
    """A consistent view of a stream dataset (see the module docstring)."""

    dataset: str
    files: list[ViewFile]
    visible_through: dict[int, int]  # Kafka partition -> highest offset a reader may see
    landed_through: dict[int, int]  # Kafka partition -> the ledger's landed_through, as read
    topics: list[str]
    taken_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat().replace("+00:00", "Z"))

    @property
    def pending(self) -> dict[int, tuple[int, int]]:
        """Partitions whose last batch is committed but not yet all in place: ``{p: (visible, landed)}``."""
        return {p: (v, self.landed_through[p]) for p, v in self.visible_through.items() if v != self.landed_through[p]}

    def visible_files(self) -> list[ViewFile]:
        """The files that may hold visible rows (files of batches above the visible position left out)."""
        out = []
        for f in self.files:
            match = DATA_FILE_NAME.match(f.path.rsplit("/", 1)[1])
            if match is not None and int(match["start"]) > self.visible_through.get(int(match["partition"]), -1):
                continue
            out.append(f)
        return out

    def filter(self) -> ds.Expression:
        """Rows at or below their partition's visible position."""
        partition, offset = ds.field("_kafka_partition"), ds.field("_kafka_offset")
        expression: ds.Expression | None = None
        for p, through in sorted(self.visible_through.items()):
            term = (partition == p) & (offset <= through)
            expression = term if expression is None else expression | term
        return expression if expression is not None else ds.scalar(False)

    def sql_filter(self) -> str:
        """:meth:`filter` as SQL (DuckDB, Spark, Trino)."""
        terms = [f"(_kafka_partition = {p} AND _kafka_offset <= {v})" for p, v in sorted(self.visible_through.items())]
        return " OR ".join(terms) or "FALSE"

    def uris(self, storage: LakeStorage, *, visible_only: bool = True) -> list[str]:
        """Absolute paths (local) or ``s3://`` URIs of the files, for any Parquet reader."""
        files = self.visible_files() if visible_only else self.files
        if isinstance(storage, LocalStorage):
            return [str(storage.root / f.path) for f in files]
        return [f"{storage.uri}/{f.path}" for f in files]

    def sql(self, storage: LakeStorage) -> str:
        """A DuckDB query reading exactly this view (hive columns from the paths, rows filtered)."""
        paths = ", ".join("'" + uri.replace("'", "''") + "'" for uri in self.uris(storage))
        if not paths:
            return "SELECT NULL WHERE FALSE"
        files = f"read_parquet([{paths}], hive_partitioning = true, union_by_name = true)"
        return f"SELECT * FROM {files}\nWHERE {self.sql_filter()}"  # noqa: S608 - quoted paths, integer positions

    def to_dataset(self, storage: LakeStorage, *, visible_only: bool = True) -> ds.Dataset | None:
        """A pyarrow dataset of the files, with ``year/month/day`` columns; None if there is no file."""
        files = self.visible_files() if visible_only else self.files
        if not files:
            return None
        filesystem, _ = native(storage, files[0].path)
        paths = [native(storage, f.path)[1] for f in files]
        schemas = [ds.dataset(paths[i], filesystem=filesystem, format="parquet").schema for i in {0, len(paths) - 1}]
        schema = pa.unify_schemas([*schemas, pa.schema(_PARTITION_FIELDS)])
        partitions = [
            (ds.field("year") == pa.scalar(f.day.year, pa.int32()))
            & (ds.field("month") == pa.scalar(f.day.month, pa.int32()))
            & (ds.field("day") == pa.scalar(f.day.day, pa.int32()))
            for f in files
        ]
        return ds.FileSystemDataset.from_paths(paths, schema=schema, format=ds.ParquetFileFormat(),
                                               filesystem=filesystem, partitions=partitions)

    def to_json(self, storage: LakeStorage) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "taken_at": self.taken_at,
            "topics": self.topics,
            "visible_through": {str(p): v for p, v in sorted(self.visible_through.items())},
            "landed_through": {str(p): v for p, v in sorted(self.landed_through.items())},
            "files": [{"path": f.path, "day": str(f.day), "bytes": f.size} for f in self.visible_files()],
            "uris": self.uris(storage),
            "filter": self.sql_filter(),
        }

    def read(self, storage: LakeStorage, columns: list[str] | None = None,
             filter: ds.Expression | None = None) -> pa.Table:  # noqa: A002 - pyarrow's name
        """The visible rows (``columns`` of them), once; see :func:`read_stream` for retries."""
        dataset = self.to_dataset(storage)
        if dataset is None:
            return pa.table({})
        expression = self.filter() if filter is None else self.filter() & filter
        return dataset.to_table(columns=columns, filter=expression)


def _ledgers(storage: LakeStorage, dataset: str) -> dict[tuple[str, int], Any]:
    prefix = f"{CONTROL_DIR}/ledger/{dataset}"
    ledgers = {}
    for entry in list_tree(storage, prefix):
        topic, _, name = entry.path[len(prefix) + 1:].rpartition("/")
        if topic and name.endswith(".json") and name[:-5].isdigit():
            ledgers[(topic, int(name[:-5]))] = LakeLedger(storage).entry(dataset, topic, int(name[:-5]))
    return ledgers


def _visible_position(storage: LakeStorage, entry: Any) -> int:
    """The ledger's position, or the offset before its last batch while that batch is being moved in."""
    if not entry.moves or not any(storage.exists(staged) for staged, _ in entry.moves):
        return entry.landed_through
    starts = [int(m["start"]) for _, final in entry.moves if (m := DATA_FILE_NAME.match(final.rsplit("/", 1)[1]))]
    return min(starts) - 1 if starts else entry.landed_through


def _generations(journals: list[CompactionJournal]) -> list[str]:
    return [j.generation for j in journals]


def stream_view(storage: LakeStorage, dataset: str, days: set[DayPartition] | None = None) -> StreamView:
    """A consistent view of ``dataset`` (of ``days`` only, if given). Read-only; safe while workers run."""
    local = isinstance(storage, LocalStorage)
    for _attempt in range(_ATTEMPTS):
        before = [] if local else active_journals(storage, dataset)
        ledgers = _ledgers(storage, dataset)
        visible = {p: _visible_position(storage, entry) for (_, p), entry in ledgers.items()}
        landed = {p: entry.landed_through for (_, p), entry in ledgers.items()}
        listing = list_day_files(storage, dataset)
        after = [] if local else active_journals(storage, dataset)
        if _generations(before) != _generations(after):
            time.sleep(0.05)
            continue  # a compaction committed or finished while we looked: look again
        by_day = {j.partition: j for j in after}
        files = []
        for day, day_files in sorted(listing.items()):
            if days is not None and day not in days:
                continue
            names = {f.name: f.size for f in day_files}
            journal = by_day.pop(day, None)
            if journal is not None:
                for name in journal.replaced:
                    names.pop(name, None)
                work = f"{CONTROL_DIR}/compaction/work/{dataset}/{day.path}/{journal.generation}"
                for name in journal.outputs:
                    if name not in names:
                        files.append(ViewFile(f"{work}/{name}", day, 0))
            files += [ViewFile(f"{dataset}/{day.path}/{name}", day, size) for name, size in sorted(names.items())]
        for day, journal in by_day.items():  # a day whose every file was replaced and no output copied yet
            if days is None or day in days:
                work = f"{CONTROL_DIR}/compaction/work/{dataset}/{day.path}/{journal.generation}"
                files += [ViewFile(f"{work}/{name}", day, 0) for name in journal.outputs]
        topics = sorted({topic for topic, _ in ledgers})
        if len(topics) > 1:
            raise ValueError(f"{dataset} is fed by several topics {topics}: positions by partition are ambiguous")
        return StreamView(dataset, files, visible, landed, topics)
    raise TimeoutError(f"{dataset}: compactions kept changing the day files for {_ATTEMPTS} attempts")


def read_stream(storage: LakeStorage, dataset: str, columns: list[str] | None = None,
                days: set[DayPartition] | None = None, attempts: int = 5) -> pa.Table:
    """The visible rows of ``dataset``, read through a fresh :func:`stream_view` (retried if a file vanished)."""
    for attempt in range(attempts):
        view = stream_view(storage, dataset, days)
        try:
            return view.read(storage, columns)
        except OSError as exc:
            if attempt == attempts - 1 or not vanished(exc):
                raise
            logger.debug("lake view of %s: a file vanished (%s); reading again", dataset, exc)
    raise AssertionError("unreachable")


def vanished(exc: BaseException) -> bool:
    """Whether a read failed because a listed file is gone (local: FileNotFoundError; S3: pyarrow's OSError)."""
    text = str(exc).lower()
    return isinstance(exc, FileNotFoundError) or isinstance(exc, OSError) and any(
        s in text for s in ("not found", "nosuchkey", "resource_not_found", "does not exist", "no such file"))
