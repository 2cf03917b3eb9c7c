"""Feeds: which Kafka topic lands in which lake dataset and warehouse tables.

A feed is configuration, not code: ``feeds.toml`` (shipped with txlake, or the
file named by ``TXLAKE_FEEDS_FILE``) lists them, and the worker starts one
agent per feed. :func:`load_feeds` validates the whole file up front so a typo
fails at start, not at the first message.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app.core.errors import ConfigurationError
from app.core.settings import Settings
from models.derived_messages import DERIVATIONS
from models.dimensions import DIMENSIONS
from models.tables import TABLES, TableSpec
from models.transaction import RECORD_MODELS

if TYPE_CHECKING:
    from models.arrow import RecordKind

__all__ = [
    "ROLES",
    "SINKS",
    "Feed",
    "derivation_source",
    "derived_feeds",
    "derived_streams_source",
    "feeds_of_role",
    "load_feeds",
]

SINKS = {
    "lake": "stream",  # app.lake.sink: Parquet files in hive day partitions
    "warehouse": "stream",  # app.warehouse.sink: the feed's dimension tables
    "deltas": "stream",  # app.tables.sink: contributions to the four tables (transaction records)
    "derived_streams": "stream",  # app.derived.sink: the derived streams, in Kafka transactions (transaction records)
    "facts": "table",  # app.warehouse.facts: a table feed's live fact rows
}
"""The sinks a feed can name, and the kind of feed each takes."""

ROLES = ("all", "streams", "tables")
"""What a worker process does (``txlake worker --role``): see :func:`feeds_of_role` and docs/kubernetes.md."""


class Feed(BaseModel):
    """One topic → one lake dataset (+ optional warehouse tables).

    A *stream* feed names its ``record`` kind and lands every record in the lake (and its
    ``warehouse`` dimensions). A *table* feed names one of the four tables (``table``): its topic is a
    ksqlDB-format changelog, kept current in the table's fact rows (``snapshot_version = 0``);
    its lake dataset holds the table's snapshot versions.

    ``sinks`` names where the feed's batches go (:data:`SINKS`); left out, a stream feed goes to
    the lake (and the warehouse if it has ``warehouse`` tables), a table feed to its facts. The
    ``deltas`` sink marks the feed the four tables are derived from; it is active only while
    ``tables.derive`` is on. The ``derived_streams`` sink marks the feed the derived streams are
    derived from (active while ``streams.derive`` is on): it writes the topics of the feeds that name
    a ``derivation`` (``flatten``, ``anonymize``, ``blacklist``), which land like any stream feed.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    topic: str = Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")
    record: str | None = None
    table: str | None = None
    dataset: str
    warehouse: tuple[str, ...] = ()
    sinks: tuple[str, ...] = ()
    derivation: str | None = None

    @field_validator("record")
    @classmethod
    def _known_record(cls, value: str | None) -> str | None:
        if value is not None and value not in RECORD_MODELS:
            raise ValueError(f"unknown record kind {value!r}; known: {', '.join(sorted(RECORD_MODELS))}")
        return value

    @field_validator("dataset")
    @classmethod
    def _relative_dataset(cls, value: str) -> str:
        path = PurePosixPath(value)
        if path.is_absolute() or ".." in path.parts or len(path.parts) != 2 or path.parts[0] not in ("streams", "tables"):
            raise ValueError(f"dataset must look like streams/<name> or tables/<name>, got {value!r}")
        return value

    @field_validator("table")
    @classmethod
    def _known_table(cls, value: str | None) -> str | None:
        if value is not None and value not in TABLES:
            raise ValueError(f"unknown table {value!r}; known: {', '.join(sorted(TABLES))}")
        return value

    @field_validator("derivation")
    @classmethod
    def _known_derivation(cls, value: str | None) -> str | None:
        if value is not None and value not in DERIVATIONS:
            raise ValueError(f"unknown derivation {value!r}; known: {', '.join(DERIVATIONS)}")
        return value

    @field_validator("sinks")
    @classmethod
    def _known_sinks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in value if name not in SINKS]
        if unknown:
            raise ValueError(f"unknown sink {unknown[0]!r}; known: {', '.join(SINKS)}")
        if len(set(value)) != len(value):
            raise ValueError("a sink is named twice")
        return value

    @model_validator(mode="before")
    @classmethod
    def _default_sinks(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("sinks"):
            table, warehouse = data.get("table"), data.get("warehouse")
            data = {**data, "sinks": ("facts",) if table else ("lake", "warehouse") if warehouse else ("lake",)}
        return data

    @model_validator(mode="after")
    def _warehouse_fits_record(self) -> Feed:
        if (self.record is None) == (self.table is None):
            raise ValueError("a feed names exactly one of record (a stream) or table")
        kind = "table" if self.table is not None else "stream"
        for name in self.sinks:
            if SINKS[name] != kind:
                raise ValueError(f"sink {name!r} takes {SINKS[name]} feeds, not {kind} feeds")
        if self.table is not None:
            if self.warehouse:
                raise ValueError("a table feed lands in its fact table: leave warehouse out")
            if self.dataset != f"tables/{self.table}":
                raise ValueError(f"a table feed's dataset is tables/{self.table}")
            if self.derivation is not None:
                raise ValueError("a table feed has no derivation (the derived streams are stream feeds)")
            return self
        for name in ("deltas", "derived_streams"):
            if name in self.sinks and self.record != "transaction":
                raise ValueError(f"the {name} sink needs a feed of transaction records")
        if self.derivation is not None:
            if {"deltas", "derived_streams"} & set(self.sinks):
                raise ValueError("a derived feed is not itself a derivation source (deltas, derived_streams)")
            if self.record != DERIVATIONS[self.derivation]:
                raise ValueError(f"derivation {self.derivation!r} writes {DERIVATIONS[self.derivation]} records, "
                                 f"not {self.record}")
        if bool(self.warehouse) != ("warehouse" in self.sinks):
            raise ValueError("name the warehouse tables (warehouse = [...]) and the warehouse sink together")
        for table in self.warehouse:
            dimension = DIMENSIONS.get(table)
            if dimension is None:
                raise ValueError(f"unknown warehouse table {table!r}; known: {', '.join(sorted(DIMENSIONS))}")
            if self.record not in dimension.record_kinds:
                raise ValueError(f"warehouse table {table!r} cannot be fed from {self.record!r} records")
        return self

    @property
    def is_table(self) -> bool:
        return self.table is not None

    @property
    def record_kind(self) -> RecordKind:
        """The stream record kind (stream feeds only)."""
        from models.arrow import RECORD_KINDS  # pyarrow: only where records are landed, not to validate feeds

        assert self.record is not None, f"{self.name} is a table feed"
        return RECORD_KINDS[self.record]

    @property
    def table_spec(self) -> TableSpec:
        """The table's wire format and fact table (table feeds only)."""
        assert self.table is not None, f"{self.name} is a stream feed"
        return TABLES[self.table]


def load_feeds(settings: Settings, path: Path | None = None) -> tuple[Feed, ...]:
    """Read and validate the feeds file; apply ``settings.topic_suffix`` to every topic.

    Raises :class:`ConfigurationError` naming the file and the offending feed.
    """
    source = path or settings.feeds_file
    try:
        if source is None:
            text = resources.files("app.core").joinpath("feeds.toml").read_text("utf-8")
            source = Path("<builtin feeds.toml>")
        else:
            text = Path(source).read_text("utf-8")
        document = tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"cannot read feeds file {source}: {exc}") from exc

    feeds = []
    for index, raw in enumerate(document.get("feed", [])):
        try:
            feed = Feed.model_validate(raw)
        except ValidationError as exc:
            raise ConfigurationError(f"{source}: feed #{index + 1} ({raw.get('name', '?')}): {exc}") from exc
        feeds.append(feed.model_copy(update={"topic": feed.topic + settings.topic_suffix}))
    if not feeds:
        raise ConfigurationError(f"{source}: no [[feed]] entries")
    for name in ("deltas", "derived_streams"):
        if sum(name in feed.sinks for feed in feeds) > 1:
            raise ConfigurationError(f"{source}: the {name} sink may be named on one feed only")
    derivations = [feed.derivation for feed in feeds if feed.derivation]
    if len(derivations) != len(set(derivations)):
        raise ConfigurationError(f"{source}: a derivation may be named by one feed only")
    for attribute in ("name", "topic", "dataset"):
        values = [getattr(feed, attribute) for feed in feeds]
        duplicates = {value for value in values if values.count(value) > 1}
        if duplicates:
            raise ConfigurationError(f"{source}: duplicate feed {attribute}: {', '.join(sorted(duplicates))}")
    return tuple(feeds)


def derivation_source(feeds: tuple[Feed, ...]) -> Feed | None:
    """The stream feed the tables are derived from (the one with the ``deltas`` sink), if any."""
    return next((feed for feed in feeds if "deltas" in feed.sinks), None)


def derived_streams_source(feeds: tuple[Feed, ...]) -> Feed | None:
    """The stream feed the derived streams are derived from (the one with the ``derived_streams`` sink), if any."""
    return next((feed for feed in feeds if "derived_streams" in feed.sinks), None)


def derived_feeds(feeds: tuple[Feed, ...]) -> dict[str, Feed]:
    """The derived stream feeds by derivation (``flatten`` → the flattened feed, ...)."""
    return {feed.derivation: feed for feed in feeds if feed.derivation is not None}


def feeds_of_role(feeds: tuple[Feed, ...], role: str) -> tuple[Feed, ...]:
    """The feeds a worker of ``role`` lands: ``streams`` the stream feeds, ``tables`` the table feeds, ``all`` both.

    The split follows the partition counts each side scales by: stream landing (with the stream
    derivation and the delta sink on the transaction feed) by the stream topics' partitions, the
    table derivation and the table feeds' landing into the facts by the deltas and table topics'.
    """
    if role not in ROLES:
        raise ConfigurationError(f"unknown role {role!r}; known: {', '.join(ROLES)}")
    if role == "all":
        return feeds
    return tuple(feed for feed in feeds if feed.is_table == (role == "tables"))
