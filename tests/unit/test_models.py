"""Wire format of the records: round trips, accepted spellings, and each kind of garbage."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from models.transaction import (
    BlacklistedTransaction,
    FlattenedLine,
    InvalidRecord,
    Transaction,
    decode,
    to_wire,
)

WIRE = {
    "TRANSACTION_ID": "TX-1",
    "USER": {"ID": "U00042", "NAME": "Zoë Dupont", "EMAIL": "zoe@example.fr", "COUNTRY": "FR", "CITY": "Lyon"},
    "AMOUNT": 123.45,
    "CURRENCY": "EUR",
    "TRANSACTION_TYPE": "PURCHASE",
    "PAYMENT_METHOD": {"ID": "PM-1", "NAME": "VISA", "CATEGORY": "CARD"},
    "PRODUCTS": [
        {"ID": "P-001", "NAME": "Café en grains", "CATEGORY": "GROCERY", "PRICE": 12.5, "QUANTITY": 2},
        {"ID": "P-017", "NAME": "ノルウェイの森", "CATEGORY": "BOOKS", "PRICE": 98.45, "QUANTITY": 1},
    ],
    "STATUS": "COMPLETED",
    "EVENT_TIMESTAMP": "2026-11-24T10:15:30.123Z",
}


def raw(value: object = WIRE, **top: object) -> bytes:
    if isinstance(value, dict):
        value = {**value, **top}
    return json.dumps(value, ensure_ascii=False).encode()


def with_field(path: str, value: object) -> bytes:
    """WIRE with the field at a dotted path (e.g. `PRODUCTS.0.QUANTITY`) set to `value`."""
    document = json.loads(raw())
    *parents, last = path.split(".")
    node = document
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[int(last) if isinstance(node, list) else last] = value
    return raw(document)


def without_field(name: str) -> bytes:
    return raw({key: value for key, value in WIRE.items() if key != name})


def lower_keys(value: object) -> object:
    if isinstance(value, dict):
        return {key.lower(): lower_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [lower_keys(item) for item in value]
    return value


def test_decode_reads_ksqldb_json() -> None:
    tx = decode(Transaction, raw())
    assert tx.user.name == "Zoë Dupont"
    assert tx.products[1].name == "ノルウェイの森"
    assert tx.products[0].quantity == 2
    assert tx.event_timestamp == datetime(2026, 11, 24, 10, 15, 30, 123000, tzinfo=UTC)


def test_to_wire_is_compact_upper_case_with_millisecond_utc_time() -> None:
    wire = to_wire(decode(Transaction, raw()))
    document = json.loads(wire)
    assert set(document) == set(WIRE)
    assert set(document["USER"]) == {"ID", "NAME", "EMAIL", "COUNTRY", "CITY"}
    assert set(document["PRODUCTS"][0]) == {"ID", "NAME", "CATEGORY", "PRICE", "QUANTITY"}
    assert document["EVENT_TIMESTAMP"] == "2026-11-24T10:15:30.123Z"
    assert b": " not in wire and b", " not in wire
    assert "Zoë".encode() in wire  # UTF-8, not \\u escapes


def test_round_trip() -> None:
    tx = decode(Transaction, raw())
    assert Transaction.model_validate_json(to_wire(tx)) == tx
    assert decode(Transaction, to_wire(tx)) == tx


def test_lower_case_names_are_accepted() -> None:
    assert decode(Transaction, raw(lower_keys(WIRE))) == decode(Transaction, raw())


def test_unknown_fields_are_ignored() -> None:
    assert decode(Transaction, raw(ROWTIME=1, NEW_COLUMN="x")) == decode(Transaction, raw())


@pytest.mark.parametrize(
    ("wire_time", "expected"),
    [
        (1_764_000_000_123, datetime(2025, 11, 24, 16, 0, 0, 123000, tzinfo=UTC)),
        ("2026-11-24T10:15:30", datetime(2026, 11, 24, 10, 15, 30, tzinfo=UTC)),
        ("2026-11-24T11:15:30.5+01:00", datetime(2026, 11, 24, 10, 15, 30, 500000, tzinfo=UTC)),
        ("2026-11-24T10:15:30.123999Z", datetime(2026, 11, 24, 10, 15, 30, 123000, tzinfo=UTC)),
    ],
)
def test_event_timestamp_forms(wire_time: object, expected: datetime) -> None:
    tx = decode(Transaction, raw(EVENT_TIMESTAMP=wire_time))
    assert tx.event_timestamp == expected
    assert tx.event_timestamp.utcoffset() == timedelta(0)
    assert Transaction.model_validate_json(to_wire(tx)) == tx


def test_python_construction_normalises_time() -> None:
    tx = decode(Transaction, raw())
    later = Transaction(
        **{**tx.__dict__, "event_timestamp": datetime(2026, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))}
    )
    assert later.event_timestamp == datetime(2026, 1, 1, tzinfo=UTC)
    assert later.event_timestamp.tzinfo is UTC


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\xff\xfe{}", "not UTF-8"),
        (raw()[:-20], "not JSON"),
        (b"1" * 5000, "not JSON (Exceeds the limit"),  # valid JSON that Python's json refuses (no .msg)
        (b"", "empty value"),
        (b"[1, 2]", "not a JSON object (list)"),
        (b'"just a string"', "not a JSON object (str)"),
        (without_field("CURRENCY"), "invalid transaction: CURRENCY: Field required"),
        (with_field("USER.EMAIL", "no-at-sign"), "invalid transaction: USER.EMAIL: String should match"),
        (with_field("USER.NAME", ["Zoë"]), "invalid transaction: USER.NAME: Input should be a valid string"),
        (with_field("AMOUNT", "123.45"), "invalid transaction: AMOUNT: Input should be a valid number"),
        (with_field("AMOUNT", 2e12), "invalid transaction: AMOUNT: Input should be less than or equal"),
        (raw().replace(b'"AMOUNT": 123.45', b'"AMOUNT": NaN'), "invalid transaction: AMOUNT: Input should be a finite number"),
        (raw().replace(b'"AMOUNT": 123.45', b'"AMOUNT": -Infinity'), "invalid transaction: AMOUNT: Input should be a finite number"),
        (with_field("PRODUCTS.0.QUANTITY", -2), "invalid transaction: PRODUCTS.0.QUANTITY: Input should be greater than or equal to 1"),
        (with_field("PRODUCTS.0.QUANTITY", 2.5), "invalid transaction: PRODUCTS.0.QUANTITY: Input should be a valid integer"),
        (with_field("PRODUCTS.0.QUANTITY", True), "invalid transaction: PRODUCTS.0.QUANTITY: Input should be a valid integer"),
        (with_field("PRODUCTS.1.PRICE", -0.01), "invalid transaction: PRODUCTS.1.PRICE: Input should be greater than or equal to 0"),
        (with_field("CURRENCY", "eur"), "invalid transaction: CURRENCY: String should match pattern"),
        (with_field("CURRENCY", "EURO"), "invalid transaction: CURRENCY: String should match pattern"),
        (with_field("STATUS", "DROP TABLE;"), "invalid transaction: STATUS: String should match pattern"),
        (with_field("PRODUCTS", []), "invalid transaction: PRODUCTS: List should have at least 1 item"),
        (with_field("USER", "U00042"), "invalid transaction: USER: Input should be an object"),
        (with_field("EVENT_TIMESTAMP", "1500-01-01T00:00:00Z"), "invalid transaction: EVENT_TIMESTAMP: year 1500 outside 1970..2200"),
        (with_field("EVENT_TIMESTAMP", "yesterday"), "invalid transaction: EVENT_TIMESTAMP: not an ISO-8601 timestamp"),
        (with_field("EVENT_TIMESTAMP", 1.5e12), "invalid transaction: EVENT_TIMESTAMP: expected an ISO-8601 string or epoch"),
        (with_field("EVENT_TIMESTAMP", 10**30), "invalid transaction: EVENT_TIMESTAMP: epoch milliseconds out of range"),
    ],
)
def test_garbage_is_rejected_with_a_reason(value: bytes, reason: str) -> None:
    with pytest.raises(InvalidRecord) as caught:
        decode(Transaction, value)
    assert caught.value.reason.startswith(reason), caught.value.reason
    assert str(caught.value) == caught.value.reason
    assert "\n" not in caught.value.reason
    assert isinstance(caught.value, ValueError)


def test_reason_does_not_echo_the_payload() -> None:
    huge = "x" * 100_000
    with pytest.raises(InvalidRecord) as caught:
        decode(Transaction, with_field("USER.NAME", huge))
    assert len(caught.value.reason) < 300
    assert caught.value.reason.startswith("invalid transaction: USER.NAME: String should have at most 255")


def test_several_errors_are_counted_not_listed() -> None:
    with pytest.raises(InvalidRecord) as caught:
        decode(Transaction, b"{}")
    assert caught.value.reason == "invalid transaction: TRANSACTION_ID: Field required (+8 more)"


def test_flattened_line_and_blacklisted_round_trip() -> None:
    line = FlattenedLine(
        transaction_id="TX-1", line_number=1, user_id="U1", user_country="FR", amount=25.0,
        currency="EUR", transaction_type="PURCHASE", payment_method_id="PM-1",
        payment_method_name="VISA", product_id="P-001", product_name="Café", product_category="GROCERY",
        product_price=12.5, product_quantity=2, line_total=25.0, status="COMPLETED",
        event_timestamp=1_764_000_000_123,
    )
    assert decode(FlattenedLine, to_wire(line)) == line
    assert json.loads(to_wire(line))["LINE_TOTAL"] == 25.0
    flagged = decode(BlacklistedTransaction, raw(BLACKLIST_REASON="country:FR"))
    assert flagged.blacklist_reason == "country:FR"
    assert decode(BlacklistedTransaction, to_wire(flagged)) == flagged
    with pytest.raises(InvalidRecord, match="invalid blacklisted transaction: BLACKLIST_REASON: Field required"):
        decode(BlacklistedTransaction, raw())


def test_records_are_frozen() -> None:
    tx = decode(Transaction, raw())
    with pytest.raises(ValueError):
        tx.amount = 1.0  # type: ignore[misc]
