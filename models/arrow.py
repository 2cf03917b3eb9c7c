"""Arrow schemas of the stream records and the batch → `pyarrow.Table` conversion.

One `RecordKind` per stream record type, found by name in `RECORD_KINDS`. Tables are built
column by column: one pass over the records collects every scalar column at C speed
(`operator.attrgetter` with dotted paths, then a transpose), each column becomes one
`pa.array(..., type=...)`; nested product lines become a list array over flat child arrays.
No pandas, no `from_pylist`.

Types: text is `string`; amounts, prices and line totals are `float64` — IEEE doubles, exactly
what ksqlDB's DOUBLE carries, so no rounding happens here; quantities and line numbers are
`int32`; `event_timestamp` is `timestamp[us, tz=UTC]`. Every table ends with two provenance
columns, `_kafka_partition` (int32) and `_kafka_offset` (int64), the Kafka position of the
message each row came from. All columns are non-nullable: every model field is required.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate, chain, repeat
from operator import attrgetter
from typing import cast

import pyarrow as pa

from models.transaction import RECORD_MODELS, FlattenedLine, Record, Transaction

__all__ = ["RECORD_KINDS", "RecordKind", "PROVENANCE_FIELDS"]

_STRING, _DOUBLE, _INT32, _INT64 = pa.string(), pa.float64(), pa.int32(), pa.int64()
_TIMESTAMP = pa.timestamp("us", tz="UTC")

PROVENANCE_FIELDS = (
    pa.field("_kafka_partition", _INT32, nullable=False),
    pa.field("_kafka_offset", _INT64, nullable=False),
)
"""The last two columns of every table: where in Kafka each row was read from."""

_PRODUCT_COLUMNS = (  # (column, type, Product attribute)
    ("product_id", _STRING, "id"),
    ("product_name", _STRING, "name"),
    ("product_category", _STRING, "category"),
    ("price", _DOUBLE, "price"),
    ("quantity", _INT32, "quantity"),
)
_PRODUCT_STRUCT = pa.struct([pa.field(name, kind, nullable=False) for name, kind, _ in _PRODUCT_COLUMNS])
_PRODUCTS = pa.list_(pa.field("item", _PRODUCT_STRUCT, nullable=False))
_products_of = attrgetter("products")
_product_values = attrgetter(*(attribute for _, _, attribute in _PRODUCT_COLUMNS))

_TRANSACTION_COLUMNS = (  # (column, type, attribute path); "products" is built apart
    ("transaction_id", _STRING, "transaction_id"),
    ("user_id", _STRING, "user.id"),
    ("user_name", _STRING, "user.name"),
    ("user_email", _STRING, "user.email"),
    ("user_country", _STRING, "user.country"),
    ("user_city", _STRING, "user.city"),
    ("amount", _DOUBLE, "amount"),
    ("currency", _STRING, "currency"),
    ("transaction_type", _STRING, "transaction_type"),
    ("payment_method_id", _STRING, "payment_method.id"),
    ("payment_method_name", _STRING, "payment_method.name"),
    ("payment_method_category", _STRING, "payment_method.category"),
    ("products", _PRODUCTS, None),
    ("status", _STRING, "status"),
    ("event_timestamp", _TIMESTAMP, "event_timestamp"),
)
_BLACKLISTED_COLUMNS = (*_TRANSACTION_COLUMNS, ("blacklist_reason", _STRING, "blacklist_reason"))
_ARROW_TYPES: dict[object, pa.DataType] = {str: _STRING, float: _DOUBLE, int: _INT32}
_FLATTENED_COLUMNS = tuple(
    (name, _TIMESTAMP if name == "event_timestamp" else _ARROW_TYPES[field.annotation], name)
    for name, field in FlattenedLine.model_fields.items()
)


@dataclass(frozen=True)
class RecordKind:
    """A stream record type: its name, pydantic model, Arrow schema and table builder.

    `columns` lists (column name, Arrow type, attribute path on the model); a path of None marks
    the nested `products` column. `schema` is derived from it: the record's columns, then
    `_kafka_partition` and `_kafka_offset`.
    """

    name: str
    model: type[Record]
    columns: tuple[tuple[str, pa.DataType, str | None], ...]
    schema: pa.Schema = field(init=False)
    _scalar_values: Callable[[Record], tuple[object, ...]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        fields = [pa.field(name, kind, nullable=False) for name, kind, _ in self.columns]
        paths = [path for _, _, path in self.columns if path is not None]
        object.__setattr__(self, "schema", pa.schema([*fields, *PROVENANCE_FIELDS]))
        object.__setattr__(self, "_scalar_values", attrgetter(*paths))

    def to_table(
        self, records: Sequence[Record], partitions: Sequence[int], offsets: Sequence[int]
    ) -> pa.Table:
        """One row per record, `partitions[i]`/`offsets[i]` being the Kafka position of `records[i]`.

        Raises ValueError if the three sequences differ in length, pyarrow errors if a value
        does not fit its column (e.g. an int beyond int32).
        """
        if not len(records) == len(partitions) == len(offsets):
            raise ValueError(
                f"{len(records)} records, {len(partitions)} partitions, {len(offsets)} offsets"
            )
        rows = map(self._scalar_values, records)
        column_values = iter(zip(*rows, strict=True)) if records else repeat(())
        arrays = [
            _products_array(cast("Sequence[Transaction]", records))  # only a transaction kind has the products column
            if path is None
            else pa.array(next(column_values), type=kind)
            for _, kind, path in self.columns
        ]
        arrays.append(pa.array(partitions, type=_INT32))
        arrays.append(pa.array(offsets, type=_INT64))
        return pa.Table.from_arrays(arrays, schema=self.schema)


def _products_array(records: Sequence[Transaction]) -> pa.Array:
    """`list<struct<...>>` of every record's product lines, built from flat child arrays."""
    per_record = list(map(_products_of, records))
    lines = list(chain.from_iterable(per_record))
    offsets = pa.array([0, *accumulate(map(len, per_record))], type=_INT32)
    child_values = zip(*map(_product_values, lines), strict=True) if lines else repeat(())
    children = [pa.array(next(child_values), type=kind) for _, kind, _ in _PRODUCT_COLUMNS]
    structs = pa.StructArray.from_arrays(children, fields=list(_PRODUCT_STRUCT))
    return pa.ListArray.from_arrays(offsets, structs, type=_PRODUCTS)


_COLUMNS = {
    "transaction": _TRANSACTION_COLUMNS,
    "flattened_line": _FLATTENED_COLUMNS,
    "blacklisted_transaction": _BLACKLISTED_COLUMNS,
}

RECORD_KINDS: dict[str, RecordKind] = {
    name: RecordKind(name, model, _COLUMNS[name]) for name, model in RECORD_MODELS.items()
}
"""Every record kind the worker lands, by name: one per :data:`~models.transaction.RECORD_MODELS` entry."""
