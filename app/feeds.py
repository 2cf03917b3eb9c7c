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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app.errors import ConfigurationError
from app.settings import Settings
from app.sinks.dimensions import DIMENSIONS
from models.arrow import RECORD_KINDS, RecordKind

__all__ = ["Feed", "load_feeds"]


class Feed(BaseModel):
    """One topic → one lake dataset (+ optional warehouse tables)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    topic: str = Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")
    record: str
    dataset: str
    warehouse: tuple[str, ...] = ()

    @field_validator("record")
    @classmethod
    def _known_record(cls, value: str) -> str:
        if value not in RECORD_KINDS:
            raise ValueError(f"unknown record kind {value!r}; known: {', '.join(sorted(RECORD_KINDS))}")
        return value

    @field_validator("dataset")
    @classmethod
    def _relative_dataset(cls, value: str) -> str:
        path = PurePosixPath(value)
        if path.is_absolute() or ".." in path.parts or len(path.parts) != 2 or path.parts[0] not in ("streams", "tables"):
            raise ValueError(f"dataset must look like streams/<name> or tables/<name>, got {value!r}")
        return value

    @model_validator(mode="after")
    def _warehouse_fits_record(self) -> Feed:
        for table in self.warehouse:
            dimension = DIMENSIONS.get(table)
            if dimension is None:
                raise ValueError(f"unknown warehouse table {table!r}; known: {', '.join(sorted(DIMENSIONS))}")
            if self.record not in dimension.record_kinds:
                raise ValueError(f"warehouse table {table!r} cannot be fed from {self.record!r} records")
        return self

    @property
    def record_kind(self) -> RecordKind:
        return RECORD_KINDS[self.record]


def load_feeds(settings: Settings, path: Path | None = None) -> tuple[Feed, ...]:
    """Read and validate the feeds file; apply ``settings.topic_suffix`` to every topic.

    Raises :class:`ConfigurationError` naming the file and the offending feed.
    """
    source = path or settings.feeds_file
    try:
        if source is None:
            text = resources.files("app").joinpath("feeds.toml").read_text("utf-8")
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
    for attribute in ("name", "topic", "dataset"):
        values = [getattr(feed, attribute) for feed in feeds]
        duplicates = {value for value in values if values.count(value) > 1}
        if duplicates:
            raise ConfigurationError(f"{source}: duplicate feed {attribute}: {', '.join(sorted(duplicates))}")
    return tuple(feeds)
