"""What an export is asked to do: a validated request and the dataset it targets."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["DayRange", "ExportRequest"]

MAX_DAYS = 366


class DayRange(BaseModel):
    """UTC calendar days ``from_day`` … ``to_day``, both included."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    from_day: date
    to_day: date

    @model_validator(mode="after")
    def _ordered(self) -> DayRange:
        if self.to_day < self.from_day:
            raise ValueError("to_day is before from_day")
        if (self.to_day - self.from_day).days >= MAX_DAYS:
            raise ValueError(f"at most {MAX_DAYS} days per export")
        return self

    def days(self) -> list[date]:
        return [date.fromordinal(n) for n in range(self.from_day.toordinal(), self.to_day.toordinal() + 1)]


class ExportRequest(BaseModel):
    """``POST /exports`` body (and the CLI's arguments).

    ``source`` is the ksqlDB stream or table name (any case); ``kind: table`` rebuilds a new
    snapshot version of the table, ``kind: stream`` rewrites the ``range`` of day partitions.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
    kind: Literal["table", "stream"]
    range: DayRange | None = None

    @model_validator(mode="after")
    def _range_fits_kind(self) -> ExportRequest:
        if self.kind == "stream" and self.range is None:
            raise ValueError("a stream export needs a range {from_day, to_day}")
        if self.kind == "table" and self.range is not None:
            raise ValueError("a table export takes no range (it rebuilds the whole table)")
        return self

    @property
    def name(self) -> str:
        """The source in txlake's spelling (lower case: feed and table names)."""
        return self.source.lower()

    @property
    def dataset(self) -> str:
        """The lake dataset it writes: ``tables/<name>`` or ``streams/<name>``."""
        return f"{'tables' if self.kind == 'table' else 'streams'}/{self.name}"
