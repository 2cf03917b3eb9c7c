"""One money semantics in both table modes: txlake's derivation against the arithmetic of ``ksql/03_tables.sql``.

The statements' expressions are read from the files themselves (their precisions and scales), then
evaluated with ksqlDB's own DECIMAL rules (:mod:`tests.ksql_arithmetic`, an independent
re-implementation) over transactions whose amounts and prices have three decimals -- where cents
rounding decides, and where the two modes used to disagree.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

from app.tables.rates import load_rates
from models.aggregates import AGGREGATORS, Buyers, contributions, group_by_key
from models.money import cents
from models.tables import TABLES, decode_row, encode_key, encode_value
from tests.ksql_arithmetic import KsqlDecimal, NumericOverflow, cast_double, literal, sum_decimals
from tools.loadgen import generate

KSQL = Path(__file__).resolve().parents[2] / "ksql"
TABLES_SQL = (KSQL / "03_tables.sql").read_text()
RATES_SQL = (KSQL / "02_exchange_rates.sql").read_text()
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DEC = r"DECIMAL\((\d+), (\d+)\)"


def _types(pattern: str, text: str = TABLES_SQL) -> list[tuple[int, int]]:
    """The ``DECIMAL(p, s)`` types of the statement expression that ``pattern`` (with DEC placeholders) matches."""
    found = re.search(pattern.replace("DEC", DEC), text)
    assert found, f"ksql statement changed shape: {pattern}"
    numbers = [int(n) for n in found.groups()]
    return list(zip(numbers[::2], numbers[1::2], strict=True))


# The expressions, as the statements write them.
AMOUNT, AMOUNT_SUM = _types(r"SUM\(CAST\(CAST\(AMOUNT AS DEC\) AS DEC\)\) AS TOTAL_AMOUNT,")
EUR_AMOUNT, EUR_WIDE = _types(r"CAST\(CAST\(T\.AMOUNT AS DEC\) \* R\.RATE_TO_EUR AS DEC\) AS AMOUNT_EUR")
(EUR_TOTAL,) = _types(r"CAST\(SUM\(AMOUNT_EUR\) AS DEC\)\s+AS TOTAL_AMOUNT_EUR")
(NET_TOTAL,) = _types(
    r"CAST\(SUM\(CASE WHEN TRANSACTION_TYPE = 'REFUND' THEN -AMOUNT_EUR ELSE AMOUNT_EUR END\) AS DEC\) AS TOTAL_AMOUNT,"
)
PRICE, REVENUE = _types(r"SUM\(CAST\(CAST\(PRODUCT_PRICE AS DEC\) \* PRODUCT_QUANTITY AS DEC\)\) AS TOTAL_REVENUE")
(RATE,) = _types(r"RATE_TO_EUR DEC", RATES_SQL)


def _rates() -> dict[str, KsqlDecimal]:
    """EXCHANGE_RATES as ksqlDB holds it: the rates file's values in DECIMAL(18, 8)."""
    return {currency: literal(str(rate), *RATE) for currency, rate in load_rates().items()}


def statement_tables(transactions) -> dict[str, dict[tuple, dict[str, Decimal]]]:
    """The four tables' money columns (and counts) as the ksqlDB statements compute them."""
    rates = _rates()
    summary, eur, net, revenue = (defaultdict(list) for _ in range(4))
    for tx in transactions:
        if tx.status != "COMPLETED":
            continue
        key = (tx.user.id, tx.transaction_type)
        summary[key].append(cast_double(tx.amount, *AMOUNT).cast(*AMOUNT_SUM))
        rate = rates.get(tx.currency)
        if rate is not None:  # the inner join with EXCHANGE_RATES
            amount_eur = (cast_double(tx.amount, *EUR_AMOUNT) * rate).cast(*EUR_WIDE)
            eur[key].append(amount_eur)
            net[(tx.payment_method.id,)].append(-amount_eur if tx.transaction_type == "REFUND" else amount_eur)
        if tx.transaction_type == "PURCHASE":
            for line in tx.products:  # TRANSACTION_FLATTENED: one row per product line
                revenue[(line.id,)].append((cast_double(line.price, *PRICE) * line.quantity).cast(*REVENUE))

    def sums(groups, output=None):
        return {
            key: {"total": (total.cast(*output) if output else total).value, "sum": total.value, "count": len(values)}
            for key, values in groups.items()
            for total in [sum_decimals(values)]
        }

    return {
        "user_transaction_summary": sums(summary),
        "user_transaction_summary_eur": sums(eur, EUR_TOTAL),
        "payment_method_totals": sums(net, NET_TOTAL),
        "product_purchase_counts": sums(revenue),
    }


def derived_tables(transactions) -> dict[str, dict[tuple, object]]:
    """The same tables from txlake's derivation (contributions folded per key, then the value record)."""
    triples = [t for offset, tx in enumerate(transactions) for t in contributions(tx, 0, offset, load_rates())]
    out: dict[str, dict[tuple, object]] = {}
    buyers = Buyers({})
    for table, keys in group_by_key(triples).items():
        aggregator, spec = AGGREGATORS[table], TABLES[table]
        out[table] = {}
        for key, contributed in keys.items():
            state = aggregator.fold(None, contributed, key.decode(), buyers if table == "product_purchase_counts" else None)
            columns = decode_row(spec, key, None).key  # the key columns, decoded as the sink does
            out[table][columns] = aggregator.value(state)
    return out


TOTAL_COLUMN = {
    "user_transaction_summary": "total_amount",
    "user_transaction_summary_eur": "total_amount_eur",
    "payment_method_totals": "total_amount",
    "product_purchase_counts": "total_revenue",
}


def three_decimal_transactions(count: int, seed: int) -> list:
    """Transactions over a few users, currencies (one without a rate) and types; amounts and prices
    with three decimals, many of them ending in 5 (a tie at cents)."""
    rng = random.Random(seed)
    template = next(generate(1, seed=seed, now=NOW))
    line = template.products[0]
    transactions = []
    for n in range(count):
        amount = rng.choice([rng.randint(0, 2_000_000) / 1000, rng.randint(0, 200_000) * 10 / 1000 + 0.005])
        products = [
            line.model_copy(update={
                "id": f"P-{rng.randint(1, 4)}",
                "price": rng.choice([rng.randint(0, 500_000) / 1000, rng.randint(0, 50_000) / 100 + 0.005]),
                "quantity": rng.randint(1, 7),
            })
            for _ in range(rng.randint(1, 3))
        ]
        transactions.append(template.model_copy(update={
            "transaction_id": f"T-{n}",
            "user": template.user.model_copy(update={"id": f"U-{rng.randint(1, 3)}"}),
            "payment_method": template.payment_method.model_copy(update={"id": f"PM-{rng.randint(1, 2)}"}),
            "amount": amount,
            "currency": rng.choice(["EUR", "USD", "GBP", "JPY", "SEK", "CHF", "AUD"]),
            "transaction_type": rng.choice(["PURCHASE", "PURCHASE", "REFUND"]),
            "status": rng.choice(["COMPLETED", "COMPLETED", "COMPLETED", "PENDING"]),
            "products": products,
        }))
    return transactions


def test_the_derivation_computes_every_total_as_the_statements_do_for_three_decimal_amounts():
    transactions = three_decimal_transactions(600, seed=11)
    expected, derived = statement_tables(transactions), derived_tables(transactions)
    for table, rows in expected.items():
        assert set(derived[table]) == set(rows), table
        for key, want in rows.items():
            value = derived[table][key]
            assert getattr(value, TOTAL_COLUMN[table]) == want["total"], (table, key)
            if table != "product_purchase_counts":
                assert value.transaction_count == want["count"], (table, key)
    # The sample decides at cents: the exact amount times the rate (the derivation before) differs.
    rates, exact = load_rates(), defaultdict(Decimal)
    for tx in transactions:
        if tx.status == "COMPLETED" and tx.currency in rates:
            exact[(tx.user.id, tx.transaction_type)] += Decimal(repr(tx.amount)) * rates[tx.currency]
    before = {key: total.quantize(Decimal("0.01"), ROUND_HALF_UP) for key, total in exact.items()}
    assert any(before[key] != row["total"] for key, row in expected["user_transaction_summary_eur"].items())


def test_three_decimal_amounts_round_to_cents_as_written_not_as_their_double():
    # 1.005 is stored as the double 1.00499999999999989...: DECIMAL(18, 2) (the statement before) made it
    # 1.00, txlake's exact derivation 1.005 * rate; both modes now take 1.01, the amount as written.
    for written, want in (("1.005", "1.01"), ("2.675", "2.68"), ("141.885", "141.89"), ("0.125", "0.13"), ("-0.125", "-0.13")):
        assert cast_double(float(written), *EUR_AMOUNT).value == Decimal(want) == cents(float(written))
    assert cast_double(1.005, 18, 2).value == Decimal("1.00")


def test_the_derived_averages_equal_the_statements_double_average_rounded_as_the_warehouse_does():
    """ksqlDB computes AVG_* as CAST(SUM(..) AS DOUBLE) / COUNT(*); the fact column rounds its text half-up."""
    transactions = three_decimal_transactions(300, seed=5)
    expected, derived = statement_tables(transactions), derived_tables(transactions)
    average = {"user_transaction_summary": "avg_amount", "user_transaction_summary_eur": "avg_amount_eur",
               "payment_method_totals": "avg_amount"}
    for table, column in average.items():
        for key, want in expected[table].items():
            double = float(want["sum"]) / want["count"]
            stored = Decimal(repr(double)).quantize(Decimal("0.0001"), ROUND_HALF_UP)
            assert getattr(derived[table][key], column) == stored, (table, key)


def test_the_issue_load_fits_every_statement_and_the_derivation_to_the_cent():
    """1,100 transactions of 999,999,999,999.99 for one user (docs/decisions/0018-money-semantics.md)."""
    template = next(generate(1, seed=1, now=NOW))
    line = template.products[0].model_copy(update={"id": "P-BIG", "price": 999_999_999_999.99, "quantity": 1})
    transactions = [
        template.model_copy(update={
            "transaction_id": f"T-{n}", "amount": 999_999_999_999.99, "currency": "USD", "status": "COMPLETED",
            "transaction_type": "PURCHASE", "products": [line],
            "user": template.user.model_copy(update={"id": "U-BIG"}),
        })
        for n in range(1100)
    ]
    expected, derived = statement_tables(transactions), derived_tables(transactions)
    summary = derived["user_transaction_summary"][("U-BIG", "PURCHASE")]
    assert summary.total_amount == Decimal("1099999999999989.00") == expected["user_transaction_summary"][("U-BIG", "PURCHASE")]["total"]
    eur = derived["user_transaction_summary_eur"][("U-BIG", "PURCHASE")]
    assert eur.total_amount_eur == Decimal("1011999999999989.88") == expected["user_transaction_summary_eur"][("U-BIG", "PURCHASE")]["total"]
    assert derived["product_purchase_counts"][("P-BIG",)].total_revenue == Decimal("1099999999999989.00")
    # The changelog record carries every digit, as ksqlDB writes a DECIMAL, and decodes back exactly.
    spec = TABLES["user_transaction_summary"]
    raw = encode_value(summary)
    assert b'"TOTAL_AMOUNT":1099999999999989.00' in raw
    assert decode_row(spec, encode_key(spec, ("U-BIG", "PURCHASE")), raw).value == summary


def test_sums_beyond_the_statements_decimal_fail_in_ksqldb_as_the_warehouse_would():
    wide = KsqlDecimal(10**35, 2, 38)  # 10^33
    with pytest.raises(NumericOverflow):
        sum_decimals([wide] * 1001)
