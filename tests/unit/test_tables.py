"""The tables' wire format, the aggregation semantics and the delta messages."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

import pyarrow as pa
import pytest

from app.tables.deltas import MAX_KEYS_PER_MESSAGE, delta_messages, partition_of, read_delta
from app.tables.rates import load_rates
from models.aggregates import AGGREGATORS, Buyers, contributions
from models.columns import BIGINT, decimal, fact_columns
from models.money import TOTAL
from models.tables import TABLES, InvalidRecord, TableSpec, decode_row, encode_key, encode_value
from models.transaction import Product, Record
from tests.ksql_statements import KSQL_DIR, select_list, statement
from tools.loadgen import generate

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
RATES = {"EUR": Decimal("1"), "USD": Decimal("0.92")}


def _tx(**changes):
    tx = next(generate(1, seed=1, now=NOW))
    updates = {"status": "COMPLETED", "transaction_type": "PURCHASE", "currency": "USD", "amount": 10.1, **changes}
    return tx.model_copy(update=updates)


# -- wire format -------------------------------------------------------------------------------


def test_two_column_keys_are_json_objects_and_single_ones_raw_strings():
    summary, products = TABLES["user_transaction_summary"], TABLES["product_purchase_counts"]
    assert json.loads(encode_key(summary, ("U1", "PURCHASE"))) == {"USER_ID": "U1", "TRANSACTION_TYPE": "PURCHASE"}
    assert encode_key(products, ("P-001",)) == b"P-001"
    assert decode_row(products, b'"P-001"', None).key == ("P-001",)  # JSON key format, unwrapped
    assert decode_row(summary, b'{"user_id": "U1", "transaction_type": "X"}', None).key == ("U1", "X")


def test_every_single_column_key_round_trips_also_one_that_starts_with_a_quote():
    """Regression (found by the fuzz test once txlake held its own undecodable records instead of
    dead-lettering them): product '"x' was written raw and read back as a broken JSON string."""
    products = TABLES["product_purchase_counts"]
    for product in ('"', '"x', '"P-1"', '""', "P-1", " ", "\x00", "x\"", "é"):
        assert decode_row(products, encode_key(products, (product,)), None).key == (product,)
    assert encode_key(products, ("P-1",)) == b"P-1"  # ksqlDB's KAFKA format, raw
    assert encode_key(products, ('"x',)) == b'"\\"x"'


def test_values_decode_upper_or_lower_case_and_tombstones_delete():
    spec = TABLES["payment_method_totals"]
    row = decode_row(spec, b"PM-1", b'{"PAYMENT_METHOD_NAME": "Card", "TOTAL_AMOUNT": 5, "transaction_count": 2}')
    assert (row.key, row.value.total_amount, row.value.transaction_count, row.value.avg_amount) == (("PM-1",), 5, 2, None)
    assert decode_row(spec, b"PM-1", None).is_tombstone
    assert json.loads(encode_value(row.value)) == {
        "PAYMENT_METHOD_NAME": "Card", "TOTAL_AMOUNT": 5, "TRANSACTION_COUNT": 2, "AVG_AMOUNT": None,
    }


def test_money_decodes_exactly_from_the_json_text_and_encodes_every_digit():
    spec = TABLES["user_transaction_summary"]
    raw = b'{"TOTAL_AMOUNT": 1099999999999989.01, "TRANSACTION_COUNT": 1100, "AVG_AMOUNT": 999999999999.9900091}'
    value = decode_row(spec, encode_key(spec, ("U1", "PURCHASE")), raw).value
    assert value.total_amount == Decimal("1099999999999989.01")  # a double would hold ...989.0
    assert value.avg_amount == Decimal("999999999999.9900091")
    assert encode_value(value) == b'{"TOTAL_AMOUNT":1099999999999989.01,"TRANSACTION_COUNT":1100,"AVG_AMOUNT":999999999999.9900091}'


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b'{"TOTAL_AMOUNT": 1e36, "TRANSACTION_COUNT": 1}', "TOTAL_AMOUNT: 1E+36 does not fit DECIMAL(38,2)"),
        (b'{"TOTAL_AMOUNT": 999999999999999999999999999999999999.995, "TRANSACTION_COUNT": 1}', "TOTAL_AMOUNT"),
        (b'{"TOTAL_AMOUNT": "12.5", "TRANSACTION_COUNT": 1}', "TOTAL_AMOUNT: expected a JSON number"),
        (b'{"TOTAL_AMOUNT": true, "TRANSACTION_COUNT": 1}', "TOTAL_AMOUNT: expected a JSON number"),
        (b'{"TOTAL_AMOUNT": NaN, "TRANSACTION_COUNT": 1}', "NaN is not a number"),
        (b'{"TOTAL_AMOUNT": 1, "TRANSACTION_COUNT": 9223372036854775808}', "TRANSACTION_COUNT"),
        (b'{"TOTAL_AMOUNT": 1, "TRANSACTION_COUNT": 2.0}', "TRANSACTION_COUNT"),
        (b'{"TOTAL_AMOUNT": 1, "TRANSACTION_COUNT": 1, "AVG_AMOUNT": 1e34}', "AVG_AMOUNT: 1E+34 does not fit DECIMAL(38,4)"),
        (b"\xff", "not UTF-8"),
        (b"[1]", "not a JSON object"),
    ],
)
def test_money_and_counts_beyond_their_columns_are_invalid(value, reason):
    spec = TABLES["user_transaction_summary"]
    with pytest.raises(InvalidRecord, match=re.escape(reason)):
        decode_row(spec, encode_key(spec, ("U1", "PURCHASE")), value)


def test_an_exchange_rate_is_positive_and_fits_decimal_18_8():
    spec = TABLES["user_transaction_summary_eur"]
    key = encode_key(spec, ("U1", "PURCHASE"))
    for rate, reason in ((b"0", "EXCHANGE_RATE: 0 is not positive"), (b"1e10", "does not fit DECIMAL(18,8)")):
        with pytest.raises(InvalidRecord, match=re.escape(reason)):
            decode_row(spec, key, b'{"TOTAL_AMOUNT_EUR": 1, "TRANSACTION_COUNT": 1, "EXCHANGE_RATE": %s}' % rate)


def test_the_largest_values_that_fit_their_columns_are_accepted():
    spec = TABLES["user_transaction_summary_eur"]
    raw = (b'{"TOTAL_AMOUNT_EUR": -999999999999999999999999999999999999.994, "TRANSACTION_COUNT": 9223372036854775807, '
           b'"AVG_AMOUNT_EUR": 9999999999999999999999999999999999.99994, "EXCHANGE_RATE": 9999999999.99999999}')
    value = decode_row(spec, encode_key(spec, ("U1", "PURCHASE")), raw).value
    assert value.transaction_count == 2**63 - 1 and value.exchange_rate == Decimal("9999999999.99999999")


@pytest.mark.parametrize(
    ("table", "key", "value", "reason"),
    [
        ("user_transaction_summary", None, b"{}", "missing key"),
        ("user_transaction_summary", b"U1", None, "key is not JSON"),
        ("user_transaction_summary", b'["U1", "X"]', None, "not an object"),
        ("user_transaction_summary", b'{"USER_ID": "U1"}', None, "TRANSACTION_TYPE missing"),
        ("product_purchase_counts", b"\xff", None, "not UTF-8"),
        ("product_purchase_counts", b"P" * 65, None, "1..64"),
        ("product_purchase_counts", b"P-1", b'{"PURCHASE_COUNT": "3", "TOTAL_REVENUE": 1, "UNIQUE_BUYERS": 1}', "PURCHASE_COUNT"),
        ("product_purchase_counts", b"P-1", b'{"PURCHASE_COUNT": -1, "TOTAL_REVENUE": 1, "UNIQUE_BUYERS": 1}', "PURCHASE_COUNT"),
        ("product_purchase_counts", b"P-1", b"[1, 2]", "not a JSON object"),
        ("product_purchase_counts", b"P-1", b"{", "not JSON"),
    ],
)
def test_bad_keys_and_values_are_invalid_with_a_reason(table, key, value, reason):
    with pytest.raises(InvalidRecord, match=re.escape(reason)):
        decode_row(TABLES[table], key, value)


# -- one description: the Arrow schema and ksql/03_tables.sql follow models/tables.py -----------
# (sql/03_create_fact_tables.sql is checked against it on MariaDB: tests/integration/test_schema.py)


def test_the_arrow_schema_is_the_columns_with_their_types_keys_not_null():
    for spec in TABLES.values():
        schema = spec.arrow_schema
        assert tuple(schema.names) == spec.columns == tuple(c.name for c in spec.fact_columns)
        for column in spec.fact_columns:
            field = schema.field(column.name)
            assert field.nullable is (column.name not in spec.key_columns), (spec.name, column.name)
            if column.key:
                assert (field.type, column.type.sql, column.type.collation) == (pa.string(), "VARCHAR(64)", "utf8mb4_nopad_bin")
        if spec.dimension is not None:
            assert spec.dimension.column in spec.key_columns
    eur = TABLES["user_transaction_summary_eur"].arrow_schema
    assert [str(f.type) for f in eur] == [
        "string", "string", "decimal128(38, 2)", "int64", "decimal128(38, 4)", "decimal128(18, 8)",
    ]
    products = TABLES["product_purchase_counts"]
    assert [c.type.sql for c in products.fact_columns] == [
        "VARCHAR(64)", "VARCHAR(255)", "VARCHAR(128)", "BIGINT", "DECIMAL(38,2)", "DECIMAL(38,4)", "BIGINT",
    ]


def test_every_value_field_must_name_its_warehouse_type():
    class Untyped(Record):
        total_amount: Decimal
        transaction_count: Annotated[int, BIGINT]

    with pytest.raises(TypeError, match="'total_amount' must carry exactly one SqlType"):
        fact_columns(("k",), Untyped.model_fields)
    with pytest.raises(TypeError, match="'total_amount'"):  # a spec refuses it when it is built (at import)
        TableSpec("untyped", ("k",), Untyped)


def test_the_text_bounds_of_the_model_are_those_of_its_columns():
    spec = TABLES["product_purchase_counts"]
    value = {"PRODUCT_NAME": "n" * 255, "PURCHASE_COUNT": 1, "TOTAL_REVENUE": 1, "UNIQUE_BUYERS": 1}
    assert decode_row(spec, b"P-1", json.dumps(value).encode()).value.product_name == "n" * 255
    with pytest.raises(InvalidRecord, match="PRODUCT_NAME"):
        decode_row(spec, b"P-1", json.dumps({**value, "PRODUCT_NAME": "n" * 256}).encode())


@pytest.mark.parametrize("spec", TABLES.values(), ids=TABLES.keys())
def test_the_ksql_create_selects_the_key_then_the_value_columns_in_order(spec):
    text = (KSQL_DIR / "03_tables.sql").read_text()
    items = select_list(text, spec.topic)
    assert [name for name, _ in items] == [column.upper() for column in spec.columns]
    create = statement(text, spec.topic)
    assert f"KAFKA_TOPIC = '{spec.topic}'" in create
    assert f"KEY_FORMAT = '{spec.key_format}'" in create and "VALUE_FORMAT = 'JSON'" in create
    group_by = re.search(r"\bGROUP BY\b(.*?)\bEMIT CHANGES\b", create, re.S).group(1)
    assert len(group_by.split(",")) == len(spec.key_columns)
    for column, (_, expression) in zip(spec.fact_columns, items, strict=True):
        if column.type == decimal(TOTAL):  # a total leaves ksqlDB rounded to the column's DECIMAL
            assert re.search(rf"DECIMAL\({TOTAL.precision}, {TOTAL.scale}\)\)*$", expression), (spec.name, column.name)


# -- aggregation -------------------------------------------------------------------------------


def test_only_completed_transactions_count_and_refunds_net_the_payment_totals():
    assert list(contributions(_tx(status="PENDING"), 0, 1, RATES)) == []
    purchase = {t: c for t, _, c in contributions(_tx(), 0, 1, RATES)}
    refund = {t: c for t, _, c in contributions(_tx(transaction_type="REFUND"), 0, 2, RATES)}
    assert Decimal(purchase["payment_method_totals"][2]) == Decimal("9.292")  # 10.10 USD * 0.92
    assert Decimal(refund["payment_method_totals"][2]) == Decimal("-9.292")
    assert "product_purchase_counts" in purchase and "product_purchase_counts" not in refund


def test_a_currency_without_a_rate_adds_nothing_in_eur():
    tables = {t for t, _, _ in contributions(_tx(currency="JPY"), 0, 1, RATES)}
    assert tables == {"user_transaction_summary", "product_purchase_counts"}


def test_a_product_on_two_lines_of_one_transaction_is_one_contribution():
    line = _tx().products[0]
    twice = _tx(products=[line, Product(**{**line.model_dump(), "quantity": 2})])
    lines = [c for t, _, c in contributions(twice, 0, 9, RATES) if t == "product_purchase_counts"]
    assert len(lines) == 1 and lines[0][2] == line.quantity + 2 and lines[0][5] == 2


def test_fold_skips_contributions_at_or_below_the_watermark():
    aggregator = AGGREGATORS["user_transaction_summary"]
    state = aggregator.fold(None, [[0, 5, "10.10"], [1, 3, "1.00"]], "k")
    replayed = aggregator.fold(state, [[0, 4, "99"], [0, 5, "10.10"], [1, 3, "1.00"], [0, 6, "0.01"]], "k")
    value = aggregator.value(replayed)
    assert (value.total_amount, value.transaction_count, value.avg_amount) == (Decimal("11.11"), 3, Decimal("3.7033"))
    assert replayed["wm"] == {"0": 6, "1": 3}


def test_unique_buyers_stay_exact_when_the_product_state_lost_a_contribution():
    aggregator, store = AGGREGATORS["product_purchase_counts"], {}
    buyers = Buyers(store)
    first = [0, 7, 1, "2.50", "2.50", 1, "U1", "Pen", "OFFICE"]
    state = aggregator.fold(None, [first], "P-1", buyers)
    assert aggregator.value(state).unique_buyers == 1
    # A crash lost the product's state but not the buyer entry: the replay of the same
    # contribution counts the buyer again, exactly once; a later purchase by U1 never does.
    again = aggregator.fold(None, [first, [0, 8, 1, "2.50", "2.50", 1, "U1", "Pen", "OFFICE"]], "P-1", buyers)
    value = aggregator.value(again)
    assert (value.unique_buyers, value.purchase_count, value.total_revenue, value.avg_price) == (1, 2, Decimal(5), Decimal("2.5"))


def test_money_rounds_half_up_to_cents():
    aggregator = AGGREGATORS["user_transaction_summary_eur"]
    state = aggregator.fold(None, [[0, 1, "0.005", "0.5"], [0, 2, "0.010", "0.5"]], "k")
    value = aggregator.value(state)
    assert (value.total_amount_eur, value.avg_amount_eur, value.exchange_rate) == (
        Decimal("0.02"), Decimal("0.0075"), Decimal("0.5"))
    assert str(value.total_amount_eur) == "0.02" and str(value.avg_amount_eur) == "0.0075"


# -- delta messages ----------------------------------------------------------------------------


def test_delta_messages_route_each_key_to_its_partition_in_source_order():
    transactions = list(generate(300, seed=4, now=NOW))
    offsets = list(range(100, 400))
    messages = list(delta_messages(transactions, offsets, 2, load_rates(), partitions=3))
    seen: dict[tuple[str, str], list[int]] = {}
    for target, value in messages:
        for table, keys in read_delta(value).items():
            for key, contributed in keys.items():
                assert partition_of(key.encode(), 3) == target
                assert (table, key) not in seen, "a key's contributions are in one message"
                seen[(table, key)] = [c[1] for c in contributed]
                assert all(c[0] == 2 for c in contributed)
    assert all(offsets == sorted(offsets) for offsets in seen.values())
    expected = {
        (t, k.decode())
        for tx, o in zip(transactions, offsets, strict=True)
        for t, k, _ in contributions(tx, 2, o, load_rates())
    }
    assert set(seen) == expected


def test_large_batches_are_split_between_keys():
    transactions = [
        _tx(user=_tx().user.model_copy(update={"id": f"U{n}"}), transaction_id=f"T{n}") for n in range(MAX_KEYS_PER_MESSAGE + 10)
    ]
    messages = list(delta_messages(transactions, range(len(transactions)), 0, RATES, partitions=1))
    assert len(messages) > 1
    assert all(len(json.dumps(read_delta(v))) < 1_000_000 for _, v in messages)


def test_rates_file_must_hold_positive_decimals(tmp_path):
    from app.core.errors import ConfigurationError

    good = tmp_path / "rates.toml"
    good.write_text('EUR = "1"\nUSD = "0.92"\n')
    assert load_rates(good) == {"EUR": Decimal("1"), "USD": Decimal("0.92")}
    for text in ('usd = "1"', 'USD = "-1"', 'USD = "x"', "", 'USD = "0.123456789"', 'USD = "10000000000"'):
        good.write_text(text)
        with pytest.raises(ConfigurationError):
            load_rates(good)
