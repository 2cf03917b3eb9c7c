"""Which rejected table records hold their partition (txlake's own) and which are dead-lettered, and
what a hold reports (the metrics are the real Prometheus registry's)."""

from __future__ import annotations

import json
import logging

from prometheus_client import REGISTRY

from app.core.feeds import Feed
from app.runtime.holds import OWN_RECORD_INVALID, VALUE_NOT_STORABLE, PartitionHolds
from app.runtime.landing import FeedLanding, RawMessage, is_derived
from models.tables import DERIVED_HEADER

OWN = ((DERIVED_HEADER, b"1"),)
KEY = json.dumps({"USER_ID": "U1", "TRANSACTION_TYPE": "PURCHASE"}).encode()
GOOD = b'{"TOTAL_AMOUNT": 10.5, "TRANSACTION_COUNT": 1}'
TOO_BIG = b'{"TOTAL_AMOUNT": 1e40, "TRANSACTION_COUNT": 1}'


def _landing(table: str | None = "user_transaction_summary") -> FeedLanding:
    if table is None:
        feed = Feed(name="transaction_stream", topic="transactions", record="transaction", dataset="streams/transaction_stream")
    else:
        feed = Feed(name=table, topic=table.upper(), table=table, dataset=f"tables/{table}")
    return FeedLanding(feed, [], dead_letters=None, backoff=None)  # type: ignore[arg-type] # decode only


def test_only_rejected_records_that_txlake_derived_hold_the_partition():
    landing = _landing()
    messages = [
        RawMessage(0, 10, KEY, GOOD, OWN),
        RawMessage(0, 11, KEY, TOO_BIG, OWN),  # own and invalid: holds
        RawMessage(0, 12, KEY, TOO_BIG, ()),  # someone else's: dead-lettered
        RawMessage(0, 13, KEY, b"{", (("other", b"x"),)),
    ]
    batch, rejected = landing.decode(0, messages)
    assert batch.offsets == [10] and [letter.offset for letter in rejected] == [11, 12, 13]
    assert [letter.offset for letter in landing._own_records(messages, rejected)] == [11]
    assert [is_derived(m) for m in messages] == [True, True, False, False]


def test_stream_feeds_never_hold_for_a_header():
    landing = _landing(None)
    messages = [RawMessage(0, 1, b"k", b"not json", OWN)]
    _, rejected = landing.decode(0, messages)
    assert landing._own_records(messages, rejected) == []


def _sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_a_hold_sets_the_gauge_counts_once_per_hold_logs_errors_and_a_release_clears_it(caplog):
    holds = PartitionHolds("unit_holds_feed")
    counted = {"feed": "unit_holds_feed", "reason": VALUE_NOT_STORABLE}
    before = _sample("txlake_partition_holds_total", **counted) or 0
    with caplog.at_level(logging.ERROR, logger="app.runtime.holds"):
        for attempt in (1, 2, 3):
            holds.hold(3, VALUE_NOT_STORABLE, "facts write of T[3] 0..9: (1264, 'Out of range')", attempt)
    assert holds.is_held(3)
    assert _sample("txlake_partition_held", feed="unit_holds_feed", partition="3") == 1
    assert _sample("txlake_partition_holds_total", **counted) == before + 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 3 and "HOLDING unit_holds_feed partition 3 (attempt 3, value_not_storable)" in errors[-1]
    assert "sql/06_migrate_exact_keys_and_wide_money.sql" in errors[-1]

    holds.hold(3, OWN_RECORD_INVALID, "another reason", 1)  # a new reason is a new hold
    assert _sample("txlake_partition_holds_total", feed="unit_holds_feed", reason=OWN_RECORD_INVALID) >= 1
    holds.release(3)
    assert not holds.is_held(3)
    assert _sample("txlake_partition_held", feed="unit_holds_feed", partition="3") == 0
    holds.release(3)  # releasing a partition that is not held changes nothing
