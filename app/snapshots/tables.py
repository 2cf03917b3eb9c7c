"""The four snapshot tables: their fact table, columns, Arrow schema and dimension references.

A version's rows have exactly the columns of :attr:`TableSpec.schema` (the fact table's business
columns; no surrogate key, no ``snapshot_*`` bookkeeping). Money is ``decimal128`` with the fact
table's precision, so a version read from the lake equals the warehouse's rows to the cent.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from app.core.errors import ConfigurationError

__all__ = ["TABLES", "DimensionRef", "TableSpec", "table_spec"]

_MONEY = pa.decimal128(18, 2)
_AVERAGE = pa.decimal128(18, 4)
_RATE = pa.decimal128(18, 8)


@dataclass(frozen=True)
class DimensionRef:
    """A fact column that references a dimension (needs a member before the fact row goes in)."""

    column: str
    table: str


@dataclass(frozen=True)
class TableSpec:
    """One table that has snapshot versions."""

    name: str  # the ksqlDB table's name; also the live feed's name in txlake_offset_ledger
    schema: pa.Schema
    key: tuple[str, ...]  # natural key (rows are written in this order)
    dimensions: tuple[DimensionRef, ...] = ()

    @property
    def fact_table(self) -> str:
        return f"fact_{self.name}"

    @property
    def topic(self) -> str:
        """The changelog topic ksqlDB (or txlake's derivation) writes: the upper-cased name."""
        return self.name.upper()

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.schema.names)

    @property
    def lake_dataset(self) -> str:
        return f"tables/{self.name}"


_USERS = DimensionRef("user_id", "dim_users")
_PAYMENT_METHODS = DimensionRef("payment_method_id", "dim_payment_methods")

TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(
            "user_transaction_summary",
            pa.schema(
                [
                    pa.field("user_id", pa.string(), nullable=False),
                    pa.field("transaction_type", pa.string(), nullable=False),
                    pa.field("total_amount", _MONEY),
                    pa.field("transaction_count", pa.int64()),
                    pa.field("avg_amount", _AVERAGE),
                ]
            ),
            key=("user_id", "transaction_type"),
            dimensions=(_USERS,),
        ),
        TableSpec(
            "user_transaction_summary_eur",
            pa.schema(
                [
                    pa.field("user_id", pa.string(), nullable=False),
                    pa.field("transaction_type", pa.string(), nullable=False),
                    pa.field("total_amount_eur", _MONEY),
                    pa.field("transaction_count", pa.int64()),
                    pa.field("avg_amount_eur", _AVERAGE),
                    pa.field("exchange_rate", _RATE),
                ]
            ),
            key=("user_id", "transaction_type"),
            dimensions=(_USERS,),
        ),
        TableSpec(
            "payment_method_totals",
            pa.schema(
                [
                    pa.field("payment_method_id", pa.string(), nullable=False),
                    pa.field("payment_method_name", pa.string()),
                    pa.field("total_amount", _MONEY),
                    pa.field("transaction_count", pa.int64()),
                    pa.field("avg_amount", _AVERAGE),
                ]
            ),
            key=("payment_method_id",),
            dimensions=(_PAYMENT_METHODS,),
        ),
        TableSpec(
            "product_purchase_counts",
            pa.schema(
                [
                    pa.field("product_id", pa.string(), nullable=False),
                    pa.field("product_name", pa.string()),
                    pa.field("product_category", pa.string()),
                    pa.field("purchase_count", pa.int64()),
                    pa.field("total_revenue", _MONEY),
                    pa.field("avg_price", _AVERAGE),
                    pa.field("unique_buyers", pa.int64()),
                ]
            ),
            key=("product_id",),
        ),
    )
}


def table_spec(name: str) -> TableSpec:
    """The spec of a snapshot table; :class:`ConfigurationError` for an unknown name."""
    try:
        return TABLES[name]
    except KeyError:
        raise ConfigurationError(f"no snapshot table {name!r}; known: {', '.join(TABLES)}") from None
