"""Hostile values through the decoder, Arrow and a Parquet round trip (no services needed)."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from app.runtime.landing import reason_of
from models.arrow import RECORD_KINDS
from models.transaction import InvalidRecord, decode
from tests.faults.scenario import record_result
from tests.fuzz.hostile import hostile_values
from tests.fuzz.rows import expected_row

pytestmark = [pytest.mark.fuzz]

KINDS = list(RECORD_KINDS.values())
SEEN: Counter[str] = Counter()  # outcomes over every example of the run (for the results table)


@pytest.fixture(scope="module", autouse=True)
def _record_outcomes():
    yield
    if SEEN:
        record_result(scenario="decoder + Arrow + Parquet round trip", inputs=sum(SEEN.values()),
                      accepted=SEEN["accepted"], rejected=sum(SEEN.values()) - SEEN["accepted"], crashes=0, ok=True)
REASONS = {"not_utf8", "not_json", "invalid_record"}


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(kind=st.sampled_from(KINDS), data=st.data())
def test_decode_accepts_or_raises_invalid_record_and_accepted_records_round_trip_verbatim(kind, data):
    value = data.draw(hostile_values(kind.name), label="value")
    try:
        record = decode(kind.model, value)
    except InvalidRecord as rejected:
        event(reason_of(rejected))
        SEEN[reason_of(rejected)] += 1
        assert reason_of(rejected) in REASONS, rejected
        assert len(rejected.reason) <= 300 and "\n" not in rejected.reason
        return
    event("accepted")
    SEEN["accepted"] += 1
    table = kind.to_table([record], [3], [2**40])
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="snappy")
    back = pq.read_table(pa.BufferReader(sink.getvalue()))
    assert back.schema.remove_metadata().equals(kind.schema)
    assert back.to_pylist() == [expected_row(kind, record, 3, 2**40)]
