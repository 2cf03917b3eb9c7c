"""The columns of the four tables: each one's warehouse type and the Arrow type of its lake twin.

A table's value columns are the fields of its pydantic model (:mod:`models.tables`); each field
names its warehouse type by carrying a :class:`SqlType` in its ``Annotated`` metadata, next to the
validators that keep a value inside that type. :func:`fact_columns` reads them back, so the model is
the one place a value column's type is written down, and every other view is derived from it:

- the warehouse: ``sql`` and ``collation`` are the fact table's column as ``sql/03`` declares it
  (``tests/integration/test_schema.py`` checks the DDL against them on a real MariaDB);
- the lake: ``arrow`` is the type of the column in a snapshot version's Parquet files -- text is
  ``string``, counts ``int64``, money ``decimal128`` with the column's precision and scale
  (:mod:`models.money`), so a version read from the lake equals the warehouse's rows to the cent.
  It is built on use: the tables' description loads without pyarrow (the command line's parser
  and the feeds' validation read it).

Key columns are ``NOT NULL`` (non-nullable in Arrow) and compare byte for byte; value columns are
nullable in both, as the fact tables declare them.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic.fields import FieldInfo

from models.money import Column

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["BIGINT", "KEY", "KEY_LENGTH", "FactColumn", "SqlType", "decimal", "fact_columns", "varchar"]


@dataclass(frozen=True)
class SqlType:
    """A warehouse column type (``sql``, e.g. ``DECIMAL(38,2)``) and its Arrow twin (:attr:`arrow`).

    The Arrow type is named, not held: ``arrow_factory`` is a pyarrow type factory (``string``,
    ``int64``, ``decimal128``), ``arrow_args`` its arguments. ``collation`` is ``None`` for the
    table's default collation.
    """

    sql: str
    arrow_factory: str
    arrow_args: tuple[int, ...] = ()
    collation: str | None = None

    @property
    def arrow(self) -> pa.DataType:
        """``pyarrow.<arrow_factory>(*arrow_args)``, e.g. ``pa.decimal128(38, 2)``."""
        import pyarrow as pa

        return getattr(pa, self.arrow_factory)(*self.arrow_args)


def varchar(length: int, *, collation: str | None = None) -> SqlType:
    """``VARCHAR(length)`` (characters, as pydantic's ``max_length`` counts them); Arrow ``string``."""
    return SqlType(f"VARCHAR({length})", "string", collation=collation)


def decimal(column: Column) -> SqlType:
    """A money column: ``DECIMAL(p,s)`` and Arrow ``decimal128(p, s)`` of the same size."""
    return SqlType(column.sql(), "decimal128", (column.precision, column.scale))


BIGINT = SqlType("BIGINT", "int64")
"""A count."""

KEY_LENGTH = 64
"""Characters of a key column (a user, payment method or product id, a transaction type)."""

KEY = varchar(KEY_LENGTH, collation="utf8mb4_nopad_bin")
"""Every key column: an id of 1..64 characters that compares byte for byte (see ``sql/02``)."""


@dataclass(frozen=True)
class FactColumn:
    """One business column of a fact table (not its surrogate id, nor the ``snapshot_*`` bookkeeping)."""

    name: str
    type: SqlType
    key: bool

    @property
    def nullable(self) -> bool:
        return not self.key

    @property
    def arrow_field(self) -> pa.Field:
        import pyarrow as pa

        return pa.field(self.name, self.type.arrow, nullable=self.nullable)


def fact_columns(key_columns: tuple[str, ...], fields: dict[str, FieldInfo]) -> tuple[FactColumn, ...]:
    """The key columns, then one column per model field in the model's order, with their types.

    Raises ``TypeError`` for a field that names no :class:`SqlType` (or more than one): every value
    column must say how the warehouse holds it.
    """
    keys = tuple(FactColumn(name, KEY, key=True) for name in key_columns)
    return keys + tuple(FactColumn(name, _sql_type(name, info), key=False) for name, info in fields.items())


def _sql_type(name: str, info: FieldInfo) -> SqlType:
    found = [item for item in (*info.metadata, *_optional_metadata(info.annotation)) if isinstance(item, SqlType)]
    if len(found) != 1:
        raise TypeError(f"field {name!r} must carry exactly one SqlType in its Annotated metadata, has {len(found)}")
    return found[0]


def _optional_metadata(annotation: Any) -> tuple[Any, ...]:
    """The ``Annotated`` metadata inside ``X | None`` (pydantic keeps it on the inner type)."""
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return ()
    return tuple(item for arg in typing.get_args(annotation) if typing.get_origin(arg) is Annotated for item in arg.__metadata__)
