"""The four tables computed from scratch, independently of txlake's derivation (a test oracle).

Plain loops over generated transactions with exact decimals, following ``ksql/03_tables.sql``;
used by ``tests/integration/test_tables.py`` and ``bench/tables.py`` (imports no test harness).
"""

from __future__ import annotations

from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal

from app.tables.rates import load_rates

__all__ = ["assert_tables_match", "expected_tables"]

CENT, BASIS = Decimal("0.01"), Decimal("0.0001")


def _cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _avg(total: Decimal, count: int) -> Decimal:
    return (total / count).quantize(BASIS, rounding=ROUND_HALF_UP)


def expected_tables(transactions) -> dict[str, dict[tuple, tuple]]:
    """The four tables computed from scratch: {table: {key: (measures...)}}."""
    rates = load_rates()
    summary = defaultdict(lambda: [Decimal(0), 0])
    summary_eur = defaultdict(lambda: [Decimal(0), 0, set()])
    methods = defaultdict(lambda: [Decimal(0), 0])
    products = defaultdict(lambda: [0, Decimal(0), Decimal(0), 0, set()])
    for tx in transactions:
        if tx.status != "COMPLETED":
            continue
        amount = Decimal(str(tx.amount))
        key = (tx.user.id, tx.transaction_type)
        summary[key][0] += amount
        summary[key][1] += 1
        if tx.currency in rates:
            eur = amount * rates[tx.currency]
            summary_eur[key][0] += eur
            summary_eur[key][1] += 1
            summary_eur[key][2].add(rates[tx.currency])
            methods[tx.payment_method.id][0] += -eur if tx.transaction_type == "REFUND" else eur
            methods[tx.payment_method.id][1] += 1
        if tx.transaction_type == "PURCHASE":
            for line in tx.products:
                entry = products[line.id]
                price = Decimal(str(line.price))
                entry[0] += line.quantity
                entry[1] += price * line.quantity
                entry[2] += price
                entry[3] += 1
                entry[4].add(tx.user.id)
    return {
        "user_transaction_summary": {k: (_cents(t), c, _avg(t, c)) for k, (t, c) in summary.items()},
        "user_transaction_summary_eur": {k: (_cents(t), c, _avg(t, c), r) for k, (t, c, r) in summary_eur.items()},
        "payment_method_totals": {(k,): (_cents(t), c, _avg(t, c)) for k, (t, c) in methods.items()},
        "product_purchase_counts": {
            (k,): (q, _cents(revenue), _avg(prices, lines), len(buyers))
            for k, (q, revenue, prices, lines, buyers) in products.items()
        },
    }


def assert_tables_match(landed, expected) -> None:
    for table, rows in expected.items():
        got = landed[table]
        assert set(got) == set(rows), f"{table}: keys differ: missing {set(rows) - set(got)}, extra {set(got) - set(rows)}"
        for key, want in rows.items():
            if table == "user_transaction_summary_eur":
                total, count, avg, rate = got[key]
                assert (total, count, avg) == want[:3], (table, key)
                assert rate in {r.quantize(Decimal("0.00000001")) for r in want[3]}, (table, key, rate)
            else:
                assert got[key] == want, (table, key, got[key], want)
