"""The pure part of ``txlake verify`` for table feeds: changelog positions, replay, live-state comparison."""

from __future__ import annotations

import json
from decimal import Decimal

from app.ops.verify.tables import (
    SHOWN_KEYS,
    ChangelogPositions,
    compare_live_state,
    fold_changelog,
    reconcile_changelog,
    stored_form,
)
from models.tables import TABLES, PaymentMethodTotals, UserTransactionSummary

SUMMARY = TABLES["user_transaction_summary"]
METHODS = TABLES["payment_method_totals"]


def _key(user: str, kind: str = "PURCHASE") -> bytes:
    return json.dumps({"USER_ID": user, "TRANSACTION_TYPE": kind}).encode()


def _value(total: float, count: int) -> bytes:
    return json.dumps({"TOTAL_AMOUNT": total, "TRANSACTION_COUNT": count, "AVG_AMOUNT": total / count}).encode()


def _positions(ledger: int, last: int = 9, committed: int | None = None) -> ChangelogPositions:
    return ChangelogPositions(log_start=0, last_offset=last, committed=committed, ledger=ledger)


# ------------------------------------------------------------------------------------------ positions


def test_positions_landed_through_the_end_are_ok_settled_or_not():
    for settled in (False, True):
        found = reconcile_changelog("f", "t", 0, _positions(9, committed=10), settled=settled)
        assert found.ok and found.missing == []


def test_changes_above_the_ledger_are_lag_unless_the_check_is_settled():
    assert reconcile_changelog("f", "t", 0, _positions(4, committed=5), settled=False).ok
    settled = reconcile_changelog("f", "t", 0, _positions(4, committed=5), settled=True)
    assert not settled.ok and settled.missing == [(5, 9)]
    nothing_landed = reconcile_changelog("f", "t", 0, _positions(-1), settled=True)
    assert nothing_landed.missing == [(0, 9)]


def test_a_settled_check_of_an_empty_partition_finds_nothing_missing():
    assert reconcile_changelog("f", "t", 0, _positions(-1, last=-1), settled=True).ok


def test_committed_ahead_of_the_ledger_and_a_ledger_beyond_kafka_are_findings():
    ahead = reconcile_changelog("f", "t", 0, _positions(4, committed=7), settled=False)
    assert ahead.committed_ahead and not ahead.ok
    assert reconcile_changelog("f", "t", 0, _positions(4, committed=5), settled=False).ok  # committed = ledger + 1
    beyond = reconcile_changelog("f", "t", 0, _positions(12, last=9), settled=False)
    assert beyond.ledger_beyond_kafka and not beyond.ok


# --------------------------------------------------------------------------------------------- replay


def test_the_last_value_per_key_wins_and_a_tombstone_removes_it():
    messages = [
        (0, _key("U1"), _value(10, 1)),
        (1, _key("U2"), _value(5, 1)),
        (2, _key("U1"), _value(30, 2)),
        (3, _key("U2"), None),
    ]
    state, unexplained, skipped = fold_changelog(SUMMARY, messages, set())
    assert state == {("U1", "PURCHASE"): UserTransactionSummary(total_amount=30, transaction_count=2, avg_amount=15)}
    assert unexplained == [] and skipped == 0


def test_dead_lettered_messages_are_skipped_and_unexplained_rejects_are_listed():
    messages = [
        (0, b"not-json", _value(1, 1)),  # bad key
        (1, _key("U1"), b'{"TOTAL_AMOUNT": "lots", "TRANSACTION_COUNT": 1}'),  # bad value
        (2, _key("U-NEVER"), None),  # tombstone for a key never held
        (3, _key("U1"), _value(2, 1)),
    ]
    state, unexplained, skipped = fold_changelog(SUMMARY, messages, {0, 1, 2})
    assert list(state) == [("U1", "PURCHASE")] and unexplained == [] and skipped == 3
    state, unexplained, skipped = fold_changelog(SUMMARY, messages, {1})
    assert unexplained == [0, 2] and skipped == 1 and list(state) == [("U1", "PURCHASE")]


def test_a_dead_lettered_tombstone_does_not_delete():
    messages = [(0, _key("U1"), _value(2, 1)), (1, _key("U1"), None)]
    state, _, _ = fold_changelog(SUMMARY, messages, {1})
    assert list(state) == [("U1", "PURCHASE")]


# ---------------------------------------------------------------------------------------- comparison


def test_a_double_is_compared_at_the_columns_scale_rounded_half_up():
    assert stored_form(129.985, Decimal("129.99")) == Decimal("129.99")
    assert stored_form(0.125, Decimal("0.0000")) == Decimal("0.1250")
    assert stored_form(-2.345, Decimal("0.00")) == Decimal("-2.35")
    assert stored_form(7, 7) == 7 and stored_form(None, None) is None and stored_form("Card", "Card") == "Card"


def _method(total: float, count: int, name: str | None = "Card") -> PaymentMethodTotals:
    return PaymentMethodTotals(payment_method_name=name, total_amount=total, transaction_count=count, avg_amount=total / count)


def test_identical_state_and_rows_are_ok():
    expected = {("PM-1",): _method(100.005, 3)}
    stored = {("PM-1",): ("Card", Decimal("100.01"), 3, Decimal("33.3350"))}
    found = compare_live_state(METHODS, expected, stored)
    assert found.ok and found.expected_keys == found.live_rows == 1


def test_missing_extra_and_differing_keys_are_counted_and_the_first_few_listed():
    expected = {(f"PM-{n:03}",): _method(10, 1) for n in range(30)}
    row = ("Card", Decimal("10.00"), 1, Decimal("10.0000"))
    stored = {(f"PM-{n:03}",): row for n in range(5, 30)}  # 0..4 missing
    stored |= {(f"PM-X{n}",): row for n in range(12)}  # 12 extra
    stored[("PM-005",)] = ("Card", Decimal("10.01"), 1, Decimal("10.0000"))
    stored[("PM-006",)] = ("Visa", Decimal("10.00"), 2, Decimal("10.0000"))
    found = compare_live_state(METHODS, expected, stored)
    assert not found.ok
    assert found.missing_count == 5 and found.missing == [[f"PM-{n:03}"] for n in range(5)]
    assert found.extra_count == 12 and len(found.extra) == SHOWN_KEYS
    assert found.differing_count == 3
    assert found.differing[0] == {"key": ["PM-005"], "column": "total_amount", "expected": "10.00", "stored": "10.01"}
    assert {d["column"] for d in found.differing[1:]} == {"payment_method_name", "transaction_count"}
    assert json.dumps(found.to_json())  # the --json report holds it as is


def test_a_fact_without_its_dimension_row_is_a_finding():
    found = compare_live_state(METHODS, {}, {})
    assert found.ok
    found.missing_dimension_keys["dim_payment_methods"] = ["PM-ORPHAN"]
    assert not found.ok
