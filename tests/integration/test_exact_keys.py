"""Ids that differ only by trailing white space are different keys, through the real worker.

Regression (issue 11, item 1): ``utf8mb4_bin`` is a PAD SPACE collation, so ``'a' = 'a '`` in MariaDB
and MySQL; two users ``a`` and ``a `` became one dimension row (with the other's attributes) and one
fact row (with both aggregates summed). Key columns are ``utf8mb4_nopad_bin`` now (sql/02, 03, 05).
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tests.integration.harness import TXLAKE, fetch_all
from tests.integration.worker_checks import dead_letter_offsets, feed_report, produce_transactions, run_verify, wait_landed
from tools.loadgen import generate

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
IDS = ["a", "a ", "a  ", "a\t"]


def _transactions():
    template = next(generate(1, seed=8, now=NOW))
    line = template.products[0]
    for n, key in enumerate(IDS):
        amount = float(10 * (n + 1))
        yield template.model_copy(update={
            "transaction_id": f"T-KEY-{n}",
            "user": template.user.model_copy(update={"id": key, "name": f"user {n}"}),
            "payment_method": template.payment_method.model_copy(update={"id": key, "name": f"method {n}"}),
            "products": [line.model_copy(update={"id": key, "name": f"product {n}", "price": amount, "quantity": 1})],
            "amount": amount, "currency": "EUR", "transaction_type": "PURCHASE", "status": "COMPLETED",
        })


async def test_ids_differing_by_trailing_white_space_stay_four_rows_in_dimensions_and_facts(deploy, warehouse_db):
    deployment = await deploy(2, TXLAKE_BATCHING__ROTATE_INTERVAL_MS="300")
    await produce_transactions(deployment, _transactions())
    worker = deployment.worker().start()
    await wait_landed(deployment)
    assert worker.alive(), worker.log()[-3000:]

    totals = {key: Decimal(10 * (n + 1)).quantize(Decimal("0.01")) for n, key in enumerate(IDS)}
    users = await fetch_all(warehouse_db, "SELECT user_id, user_name, is_inferred FROM dim_users")
    assert sorted(users) == sorted((key, f"user {n}", 0) for n, key in enumerate(IDS))
    methods = await fetch_all(warehouse_db, "SELECT payment_method_id, payment_method_name FROM dim_payment_methods")
    assert sorted(methods) == sorted((key, f"method {n}") for n, key in enumerate(IDS))
    live = "WHERE snapshot_version = 0"
    summary = await fetch_all(warehouse_db, f"SELECT user_id, transaction_type, total_amount, transaction_count "
                                            f"FROM fact_user_transaction_summary {live}")
    assert sorted(summary) == sorted((key, "PURCHASE", total, 1) for key, total in totals.items())
    eur = await fetch_all(warehouse_db, f"SELECT user_id, total_amount_eur FROM fact_user_transaction_summary_eur {live}")
    assert sorted(eur) == sorted(totals.items())
    net = await fetch_all(warehouse_db, f"SELECT payment_method_id, total_amount FROM fact_payment_method_totals {live}")
    assert sorted(net) == sorted(totals.items())
    products = await fetch_all(warehouse_db, f"SELECT product_id, product_name, total_revenue, unique_buyers "
                                             f"FROM fact_product_purchase_counts {live}")
    assert sorted(products) == sorted((key, f"product {n}", totals[key], 1) for n, key in enumerate(IDS))
    # A join on the key pairs each fact with its own member only.
    joined = await fetch_all(warehouse_db, "SELECT u.user_name, f.total_amount FROM fact_user_transaction_summary f "
                                           "JOIN dim_users u ON u.user_id = f.user_id WHERE f.snapshot_version = 0")
    assert sorted(joined) == sorted((f"user {n}", totals[key]) for n, key in enumerate(IDS))

    assert await dead_letter_offsets(deployment) == {}
    worker.stop()
    code, report = run_verify(deployment, "--settled")
    assert code == 0, [f for f in report["feeds"] if not f["ok"]]
    assert feed_report(report, "user_transaction_summary")["live_state"]["live_rows"] == len(IDS)

    # Snapshot versions (rows read back from the lake, inferred-member check, unique trigger) keep them apart too.
    taken = subprocess.run([TXLAKE, "snapshot", "take", "--all", "--json"], env=worker.env, capture_output=True,
                           text=True, timeout=180)
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert sorted((v["table"], v["row_count"]) for v in json.loads(taken.stdout)) == [
        ("payment_method_totals", 4), ("product_purchase_counts", 4), ("user_transaction_summary", 4),
        ("user_transaction_summary_eur", 4),
    ]
    versioned = await fetch_all(warehouse_db, "SELECT user_id, total_amount FROM fact_user_transaction_summary "
                                              "WHERE snapshot_version = 1")
    assert sorted(versioned) == sorted(totals.items())
    assert len(await fetch_all(warehouse_db, "SELECT user_id FROM dim_users")) == len(IDS)  # no member added
