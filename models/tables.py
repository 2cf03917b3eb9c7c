"""The four ksqlDB tables: their one description, their changelog records on the wire, their rows.

:data:`TABLES` holds a :class:`TableSpec` per table, the only place a table's columns and their
types are written down (the value models' fields carry their warehouse types, :mod:`models.columns`);
the fact sink's columns and the snapshot files' Arrow schema derive from it, and tests hold
``sql/03_create_fact_tables.sql`` and ``ksql/03_tables.sql`` to it.

A table's changelog topic carries one message per change of a key, as ksqlDB writes it:

- the **key** in the key bytes. Single-column keys use ksqlDB's ``KAFKA`` format (the raw UTF-8
  string); a JSON-encoded string (``"P-001"``, ksqlDB's ``JSON`` key format with one column,
  unwrapped) is accepted too. So a key whose first character is ``"`` reads as JSON: txlake writes
  an id that starts with ``"`` as a JSON string (:func:`encode_key`), and every id round-trips (a
  raw ``KAFKA`` key from ksqlDB that starts with ``"`` is ambiguous: it is read as JSON, or
  rejected). ``user_transaction_summary`` and ``user_transaction_summary_eur``
  are keyed by (user id, transaction type): ``KAFKA`` cannot hold two columns, so their key is a
  JSON object ``{"USER_ID": "...", "TRANSACTION_TYPE": "..."}`` (``KEY_FORMAT='JSON'``).
- the **value**: a JSON object of the non-key columns, names upper-cased (lower case accepted).
- a **null value** (tombstone) deletes the key.
- the **header** :data:`DERIVED_HEADER` when txlake's table agent wrote the record (``tables.derive``):
  the landing never dead-letters such a record (it holds the partition instead, see
  :mod:`app.runtime.holds`); records of ksqlDB or anyone else carry no such header.

:func:`decode_row` turns one message into a :class:`TableRow` or raises
:class:`~models.transaction.InvalidRecord` with a one-line reason (key that does not parse, value
of the wrong type) -- the same contract as the stream records' ``decode``.

Money is exact: a JSON number becomes a :class:`~decimal.Decimal` from its text (pydantic's own JSON
parser would go through a double and lose the cents of a total above ~10^13), bounded by the
warehouse column it lands in (:mod:`models.money`), and :func:`encode_value` writes it back as a
JSON number with every digit, as ksqlDB writes a DECIMAL. Counts are bounded by BIGINT, texts by
their VARCHAR: a value the model accepts always fits its fact row.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple

import msgspec
from pydantic import AfterValidator, BeforeValidator, Field, ValidationError

from models.columns import BIGINT, KEY_LENGTH, FactColumn, decimal, fact_columns, varchar
from models.money import AVERAGE, RATE, TOTAL, Column
from models.transaction import InvalidRecord, Record, _record_name, invalid_record

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "DERIVED_HEADER",
    "TABLES",
    "DimensionRef",
    "PaymentMethodTotals",
    "ProductPurchaseCounts",
    "TableRow",
    "TableSpec",
    "UserTransactionSummary",
    "UserTransactionSummaryEur",
    "decode_row",
    "encode_key",
]

DERIVED_HEADER = "txlake.derived"
"""Header of the changelog records txlake derives itself (value ``b"1"``)."""

_BIGINT = 2**63 - 1


def _json_number(value: object) -> object:
    """A JSON number as an exact Decimal (``decode_row`` parses floats as Decimal); anything else is refused."""
    if type(value) is int:
        return Decimal(value)
    if type(value) is Decimal:
        return value
    raise ValueError("expected a JSON number")


def _fits(column: Column, *, positive: bool = False) -> AfterValidator:
    """Accepts an exact decimal that fits ``column`` once rounded to its scale (sizes: :mod:`models.money`)."""

    def fits(value: Decimal) -> Decimal:
        if not value.is_finite() or not column.fits(value):
            raise ValueError(f"{value} does not fit {column.sql()}")
        if positive and value <= 0:
            raise ValueError(f"{value} is not positive")
        return value

    return AfterValidator(fits)


_Count = Annotated[int, Field(ge=0, le=_BIGINT), BIGINT]
_Money = Annotated[Decimal, BeforeValidator(_json_number), _fits(TOTAL), decimal(TOTAL)]
_Average = Annotated[Decimal, BeforeValidator(_json_number), _fits(AVERAGE), decimal(AVERAGE)]
_Rate = Annotated[Decimal, BeforeValidator(_json_number), _fits(RATE, positive=True), decimal(RATE)]


# Texts of at most n characters in a VARCHAR(n) (a name, a category).
_PaymentMethodName = Annotated[str, Field(max_length=128), varchar(128)]
_ProductName = Annotated[str, Field(max_length=255), varchar(255)]
_ProductCategory = Annotated[str, Field(max_length=128), varchar(128)]


class UserTransactionSummary(Record):
    """Value of ``USER_TRANSACTION_SUMMARY``: completed transactions of a user and type."""

    total_amount: _Money
    transaction_count: _Count
    avg_amount: _Average | None = None


class UserTransactionSummaryEur(Record):
    """Value of ``USER_TRANSACTION_SUMMARY_EUR``: the same in EUR, with the rate last applied."""

    total_amount_eur: _Money
    transaction_count: _Count
    avg_amount_eur: _Average | None = None
    exchange_rate: _Rate | None = None


class PaymentMethodTotals(Record):
    """Value of ``PAYMENT_METHOD_TOTALS``: net EUR volume of completed transactions (refunds negative)."""

    payment_method_name: _PaymentMethodName | None = None
    total_amount: _Money
    transaction_count: _Count
    avg_amount: _Average | None = None


class ProductPurchaseCounts(Record):
    """Value of ``PRODUCT_PURCHASE_COUNTS``: units, revenue and buyers of completed purchases."""

    product_name: _ProductName | None = None
    product_category: _ProductCategory | None = None
    purchase_count: _Count
    total_revenue: _Money
    avg_price: _Average | None = None
    unique_buyers: _Count


class DimensionRef(NamedTuple):
    """The dimension a fact's key column references: a member must exist before the fact row goes in."""

    table: str
    column: str


@dataclass(frozen=True)
class TableSpec:
    """One ksqlDB table: the single description of its topic, its columns and its fact table.

    ``key_columns`` name the key (warehouse column names; the wire key uses them upper-cased), every
    one of type :data:`~models.columns.KEY`; the value columns are ``model``'s fields, in order, each
    with the type its annotation carries (:mod:`models.columns`). ``dimension`` is the dimension a
    key column references, if any. Everything else is derived:

    - ``topic`` (the changelog topic ksqlDB or txlake's derivation writes) and ``fact_table``;
    - :attr:`fact_columns`: the fact table's business columns with their warehouse types, key
      first -- what the warehouse sink upserts and a snapshot version copies (:attr:`columns`);
    - :attr:`arrow_schema`: the schema of a snapshot version's Parquet files in the lake.

    Tests hold ``sql/03_create_fact_tables.sql`` (on a real MariaDB) and ``ksql/03_tables.sql`` (the
    select list's names and order) to this description.
    """

    name: str
    key_columns: tuple[str, ...]
    model: type[Record]
    dimension: DimensionRef | None = None

    def __post_init__(self) -> None:
        """Fail at import on a value field without its type, or a dimension off the key."""
        self.fact_columns  # noqa: B018 - computed (and cached) now
        if self.dimension is not None and self.dimension.column not in self.key_columns:
            raise ValueError(f"{self.name}: dimension column {self.dimension.column} is not a key column")

    @property
    def topic(self) -> str:
        return self.name.upper()

    @property
    def fact_table(self) -> str:
        return f"fact_{self.name}"

    @property
    def value_columns(self) -> tuple[str, ...]:
        return tuple(self.model.model_fields)

    @property
    def key_format(self) -> str:
        return "JSON" if len(self.key_columns) > 1 else "KAFKA"

    @property
    def columns(self) -> tuple[str, ...]:
        """The business columns' names: key columns, then value columns (rows are tuples in this order)."""
        return (*self.key_columns, *self.value_columns)

    @functools.cached_property
    def fact_columns(self) -> tuple[FactColumn, ...]:
        return fact_columns(self.key_columns, self.model.model_fields)

    @functools.cached_property
    def arrow_schema(self) -> pa.Schema:
        """A snapshot version's schema: one field per business column; keys non-nullable."""
        import pyarrow as pa  # on use: the tables' description itself loads without pyarrow

        return pa.schema([column.arrow_field for column in self.fact_columns])


TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(
            "user_transaction_summary", ("user_id", "transaction_type"), UserTransactionSummary,
            DimensionRef("dim_users", "user_id"),
        ),
        TableSpec(
            "user_transaction_summary_eur", ("user_id", "transaction_type"), UserTransactionSummaryEur,
            DimensionRef("dim_users", "user_id"),
        ),
        TableSpec(
            "payment_method_totals", ("payment_method_id",), PaymentMethodTotals,
            DimensionRef("dim_payment_methods", "payment_method_id"),
        ),
        TableSpec("product_purchase_counts", ("product_id",), ProductPurchaseCounts),
    )
}
"""The four tables by name (the name is also the table feed's and the lake dataset's name)."""


@dataclass(frozen=True, slots=True)
class TableRow:
    """One changelog record: the key's column values and the new value (``None``: deleted)."""

    key: tuple[str, ...]
    value: Record | None

    @property
    def is_tombstone(self) -> bool:
        return self.value is None


_MAX_KEY_BYTES = 1024


def encode_key(spec: TableSpec, key: tuple[str, ...]) -> bytes:
    """The key bytes ksqlDB writes for ``key`` (see the module docstring)."""
    if len(key) != len(spec.key_columns):
        raise ValueError(f"{spec.name}: key needs {len(spec.key_columns)} columns, got {len(key)}")
    if spec.key_format == "KAFKA":
        # Raw, as ksqlDB writes it -- except an id starting with '"', which decode_key would read as JSON.
        return (json.dumps(key[0], ensure_ascii=False) if key[0].startswith('"') else key[0]).encode()
    return json.dumps(
        {column.upper(): part for column, part in zip(spec.key_columns, key, strict=True)},
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()


def decode_key(spec: TableSpec, raw: bytes | None) -> tuple[str, ...]:
    """The key columns of a changelog message, or :class:`InvalidRecord` saying why not."""
    if not raw:
        raise InvalidRecord("missing key (a table record needs its key in the key bytes)")
    if len(raw) > _MAX_KEY_BYTES:
        raise InvalidRecord(f"key longer than {_MAX_KEY_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InvalidRecord(f"key not UTF-8 (byte {err.start})") from None
    if spec.key_format == "KAFKA":
        if text.startswith('"'):  # JSON key format, single column unwrapped
            try:
                text = json.loads(text)
            except ValueError:
                raise InvalidRecord("key starts with '\"' but is not a JSON string") from None
            if not isinstance(text, str):
                raise InvalidRecord("JSON key is not a string")
        return (_key_part(spec.key_columns[0], text),)
    try:
        parsed = json.loads(text)
    except ValueError:
        raise InvalidRecord(f"key is not JSON (KEY_FORMAT='JSON' with {', '.join(spec.key_columns)})") from None
    if not isinstance(parsed, dict):
        raise InvalidRecord(f"JSON key is not an object of {', '.join(c.upper() for c in spec.key_columns)}")
    parts = []
    for column in spec.key_columns:
        value = parsed.get(column.upper(), parsed.get(column))
        if not isinstance(value, str):
            raise InvalidRecord(f"key column {column.upper()} missing or not a string")
        parts.append(_key_part(column, value))
    return tuple(parts)


def _key_part(column: str, value: str) -> str:
    if not 1 <= len(value) <= KEY_LENGTH:
        raise InvalidRecord(f"key column {column.upper()} must be 1..{KEY_LENGTH} characters")
    return value


def decode_row(spec: TableSpec, key: bytes | None, value: bytes | None) -> TableRow:
    """Decode one changelog message of ``spec``'s topic, or raise :class:`InvalidRecord`."""
    columns = decode_key(spec, key)
    if value is None:
        return TableRow(columns, None)
    document = _parse_exact(spec.model, value)
    try:
        return TableRow(columns, spec.model.model_validate(document))
    except ValidationError as exc:
        raise invalid_record(spec.model, value, exc) from None


class _NonFinite(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _NonFinite(f"{name} is not a number")


def _parse_exact(model: type[Record], raw: bytes) -> dict[str, Any]:
    """A JSON object whose non-integer numbers are exact Decimals, or :class:`InvalidRecord`."""
    try:
        document = json.loads(raw.decode("utf-8"), parse_float=Decimal, parse_constant=_reject_constant)
    except _NonFinite as exc:
        raise InvalidRecord(f"invalid {_record_name(model)}: {exc}") from None
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        document = None
    if not isinstance(document, dict):
        raise invalid_record(model, raw, None)
    return document


@functools.cache
def _wire_names(model: type[Record]) -> tuple[tuple[str, str], ...]:
    return tuple((name, name.upper()) for name in model.model_fields)


_ENCODER = msgspec.json.Encoder(decimal_format="number")


def encode_value(record: Record) -> bytes:
    """The value bytes ksqlDB writes: compact JSON, UPPER-CASE names, nulls kept, decimals as exact numbers."""
    return _ENCODER.encode({wire: getattr(record, name) for name, wire in _wire_names(type(record))})


def fields_of(record: Record) -> dict[str, Any]:
    """The record's values by (lower-case) column name."""
    return dict(record)
