"""The four ksqlDB tables: their changelog records on the wire and their rows in the warehouse.

A table's changelog topic carries one message per change of a key, as ksqlDB writes it:

- the **key** in the key bytes. Single-column keys use ksqlDB's ``KAFKA`` format (the raw UTF-8
  string); a JSON-encoded string (``"P-001"``, ksqlDB's ``JSON`` key format with one column,
  unwrapped) is accepted too. ``user_transaction_summary`` and ``user_transaction_summary_eur``
  are keyed by (user id, transaction type): ``KAFKA`` cannot hold two columns, so their key is a
  JSON object ``{"USER_ID": "...", "TRANSACTION_TYPE": "..."}`` (``KEY_FORMAT='JSON'``).
- the **value**: a JSON object of the non-key columns, names upper-cased (lower case accepted).
- a **null value** (tombstone) deletes the key.

:func:`decode_row` turns one message into a :class:`TableRow` or raises
:class:`~models.transaction.InvalidRecord` with a one-line reason (key that does not parse, value
of the wrong type) -- the same contract as the stream records' ``decode``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

from pydantic import Field, ValidationError

from models.transaction import InvalidRecord, Record, invalid_record

__all__ = [
    "TABLES",
    "PaymentMethodTotals",
    "ProductPurchaseCounts",
    "TableRow",
    "TableSpec",
    "UserTransactionSummary",
    "UserTransactionSummaryEur",
    "decode_row",
    "encode_key",
]

_Count = Annotated[int, Field(ge=0)]
_Money = Annotated[float, Field(ge=-1e15, le=1e15)]
_Rate = Annotated[float, Field(gt=0, le=1e9)]


class UserTransactionSummary(Record):
    """Value of ``USER_TRANSACTION_SUMMARY``: completed transactions of a user and type."""

    total_amount: _Money
    transaction_count: _Count
    avg_amount: _Money | None = None


class UserTransactionSummaryEur(Record):
    """Value of ``USER_TRANSACTION_SUMMARY_EUR``: the same in EUR, with the rate last applied."""

    total_amount_eur: _Money
    transaction_count: _Count
    avg_amount_eur: _Money | None = None
    exchange_rate: _Rate | None = None


class PaymentMethodTotals(Record):
    """Value of ``PAYMENT_METHOD_TOTALS``: net EUR volume of completed transactions (refunds negative)."""

    payment_method_name: str | None = Field(None, max_length=128)
    total_amount: _Money
    transaction_count: _Count
    avg_amount: _Money | None = None


class ProductPurchaseCounts(Record):
    """Value of ``PRODUCT_PURCHASE_COUNTS``: units, revenue and buyers of completed purchases."""

    product_name: str | None = Field(None, max_length=255)
    product_category: str | None = Field(None, max_length=128)
    purchase_count: _Count
    total_revenue: _Money
    avg_price: _Money | None = None
    unique_buyers: _Count


@dataclass(frozen=True)
class TableSpec:
    """One ksqlDB table: topic, key, value model and the fact table that holds it.

    ``key_columns`` are warehouse column names (the wire key uses them upper-cased);
    ``value_columns`` are the model's fields, which are also the fact table's columns.
    ``dimension`` names the (table, column) the fact's foreign key points to, if any.
    """

    name: str
    topic: str
    fact_table: str
    key_columns: tuple[str, ...]
    model: type[Record]
    dimension: tuple[str, str] | None

    @property
    def value_columns(self) -> tuple[str, ...]:
        return tuple(self.model.model_fields)

    @property
    def key_format(self) -> str:
        return "JSON" if len(self.key_columns) > 1 else "KAFKA"

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.key_columns, *self.value_columns)


TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(
            "user_transaction_summary", "USER_TRANSACTION_SUMMARY", "fact_user_transaction_summary",
            ("user_id", "transaction_type"), UserTransactionSummary, ("dim_users", "user_id"),
        ),
        TableSpec(
            "user_transaction_summary_eur", "USER_TRANSACTION_SUMMARY_EUR", "fact_user_transaction_summary_eur",
            ("user_id", "transaction_type"), UserTransactionSummaryEur, ("dim_users", "user_id"),
        ),
        TableSpec(
            "payment_method_totals", "PAYMENT_METHOD_TOTALS", "fact_payment_method_totals",
            ("payment_method_id",), PaymentMethodTotals, ("dim_payment_methods", "payment_method_id"),
        ),
        TableSpec(
            "product_purchase_counts", "PRODUCT_PURCHASE_COUNTS", "fact_product_purchase_counts",
            ("product_id",), ProductPurchaseCounts, None,
        ),
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
        return key[0].encode()
    return json.dumps(
        {column.upper(): part for column, part in zip(spec.key_columns, key)},
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
    if not 1 <= len(value) <= 64:
        raise InvalidRecord(f"key column {column.upper()} must be 1..64 characters")
    return value


def decode_row(spec: TableSpec, key: bytes | None, value: bytes | None) -> TableRow:
    """Decode one changelog message of ``spec``'s topic, or raise :class:`InvalidRecord`."""
    columns = decode_key(spec, key)
    if value is None:
        return TableRow(columns, None)
    try:
        return TableRow(columns, spec.model.model_validate_json(value))
    except ValidationError as exc:
        raise invalid_record(spec.model, value, exc) from None


def encode_value(record: Record) -> bytes:
    """The value bytes ksqlDB writes: compact JSON, UPPER-CASE names, nulls kept."""
    return record.model_dump_json(by_alias=True).encode()


def money(value: Decimal, places: int = 2) -> float:
    """A decimal rounded half-up to ``places`` as the JSON number ksqlDB's DOUBLE would carry."""
    return float(value.quantize(Decimal(1).scaleb(-places), rounding="ROUND_HALF_UP"))


def fields_of(record: Record) -> dict[str, Any]:
    """The record's values by (lower-case) column name."""
    return dict(record)
