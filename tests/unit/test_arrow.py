"""Arrow schemas and batch → table conversion of the record kinds."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from models.arrow import RECORD_KINDS
from models.derive import Blacklist, blacklisted, flatten
from models.transaction import BlacklistedTransaction, FlattenedLine, Transaction, decode
from tests.unit.test_models import raw

PRODUCT = pa.struct(
    [
        pa.field("product_id", pa.string(), nullable=False),
        pa.field("product_name", pa.string(), nullable=False),
        pa.field("product_category", pa.string(), nullable=False),
        pa.field("price", pa.float64(), nullable=False),
        pa.field("quantity", pa.int32(), nullable=False),
    ]
)
TRANSACTION_COLUMNS = [
    ("transaction_id", pa.string()), ("user_id", pa.string()), ("user_name", pa.string()),
    ("user_email", pa.string()), ("user_country", pa.string()), ("user_city", pa.string()),
    ("amount", pa.float64()), ("currency", pa.string()), ("transaction_type", pa.string()),
    ("payment_method_id", pa.string()), ("payment_method_name", pa.string()),
    ("payment_method_category", pa.string()),
    ("products", pa.list_(pa.field("item", PRODUCT, nullable=False))),
    ("status", pa.string()), ("event_timestamp", pa.timestamp("us", tz="UTC")),
]
FLATTENED_COLUMNS = [
    ("transaction_id", pa.string()), ("line_number", pa.int32()), ("user_id", pa.string()),
    ("user_country", pa.string()), ("amount", pa.float64()), ("currency", pa.string()),
    ("transaction_type", pa.string()), ("payment_method_id", pa.string()),
    ("payment_method_name", pa.string()), ("product_id", pa.string()), ("product_name", pa.string()),
    ("product_category", pa.string()), ("product_price", pa.float64()),
    ("product_quantity", pa.int32()), ("line_total", pa.float64()), ("status", pa.string()),
    ("event_timestamp", pa.timestamp("us", tz="UTC")),
]
PROVENANCE = [("_kafka_partition", pa.int32()), ("_kafka_offset", pa.int64())]


def expected_schema(columns: list[tuple[str, pa.DataType]]) -> pa.Schema:
    return pa.schema([pa.field(name, kind, nullable=False) for name, kind in columns + PROVENANCE])


@pytest.fixture
def tx() -> Transaction:
    return decode(Transaction, raw())


def test_registry() -> None:
    assert set(RECORD_KINDS) == {"transaction", "flattened_line", "blacklisted_transaction"}
    assert RECORD_KINDS["transaction"].model is Transaction
    assert RECORD_KINDS["flattened_line"].model is FlattenedLine
    assert RECORD_KINDS["blacklisted_transaction"].model is BlacklistedTransaction
    assert all(kind.name == name for name, kind in RECORD_KINDS.items())


@pytest.mark.parametrize(
    ("kind", "columns"),
    [
        ("transaction", TRANSACTION_COLUMNS),
        ("flattened_line", FLATTENED_COLUMNS),
        ("blacklisted_transaction", [*TRANSACTION_COLUMNS, ("blacklist_reason", pa.string())]),
    ],
)
def test_schemas(kind: str, columns: list[tuple[str, pa.DataType]]) -> None:
    assert RECORD_KINDS[kind].schema.equals(expected_schema(columns), check_metadata=True)


def test_transaction_table_values(tx: Transaction) -> None:
    other = tx.model_copy(update={"transaction_id": "TX-2", "products": tx.products[:1]})
    table = RECORD_KINDS["transaction"].to_table([tx, other], [3, 4], [10, 2**40])
    assert table.schema.equals(RECORD_KINDS["transaction"].schema)
    rows = table.to_pylist()
    assert rows[0]["transaction_id"] == "TX-1" and rows[1]["transaction_id"] == "TX-2"
    assert rows[0]["user_name"] == "Zoë Dupont"
    assert rows[0]["user_email"] == "zoe@example.fr"
    assert rows[0]["payment_method_category"] == "CARD"
    assert rows[0]["amount"] == 123.45
    assert rows[0]["event_timestamp"] == datetime(2026, 11, 24, 10, 15, 30, 123000, tzinfo=UTC)
    assert rows[0]["products"] == [
        {"product_id": "P-001", "product_name": "Café en grains", "product_category": "GROCERY", "price": 12.5, "quantity": 2},
        {"product_id": "P-017", "product_name": "ノルウェイの森", "product_category": "BOOKS", "price": 98.45, "quantity": 1},
    ]
    assert [len(row["products"]) for row in rows] == [2, 1]
    assert table.column("_kafka_partition").to_pylist() == [3, 4]
    assert table.column("_kafka_offset").to_pylist() == [10, 2**40]
    assert table.column("event_timestamp").cast(pa.int64()).to_pylist()[0] == 1_795_515_330_123_000


def test_flattened_table_values(tx: Transaction) -> None:
    lines = flatten(tx)
    table = RECORD_KINDS["flattened_line"].to_table(lines, [0, 0], [7, 7])
    assert table.column("line_number").to_pylist() == [1, 2]
    assert table.column("product_name").to_pylist() == ["Café en grains", "ノルウェイの森"]
    assert table.column("line_total").to_pylist() == [25.0, 98.45]
    assert table.to_pylist()[1] == {
        **lines[1].model_dump(), "_kafka_partition": 0, "_kafka_offset": 7,
    }


def test_blacklisted_table_values(tx: Transaction) -> None:
    flagged = blacklisted(tx, Blacklist(countries={"fr"}))
    assert flagged is not None
    table = RECORD_KINDS["blacklisted_transaction"].to_table([flagged], [1], [0])
    assert table.column("blacklist_reason").to_pylist() == ["country:FR"]
    assert table.column_names[-3:] == ["blacklist_reason", "_kafka_partition", "_kafka_offset"]
    assert table.column("products").to_pylist()[0][1]["quantity"] == 1


@pytest.mark.parametrize("kind", sorted(RECORD_KINDS))
def test_empty_batch(kind: str) -> None:
    table = RECORD_KINDS[kind].to_table([], [], [])
    assert table.num_rows == 0
    assert table.schema.equals(RECORD_KINDS[kind].schema)


def test_lengths_must_match(tx: Transaction) -> None:
    with pytest.raises(ValueError, match="2 records, 1 partitions, 2 offsets"):
        RECORD_KINDS["transaction"].to_table([tx, tx], [0], [1, 2])
