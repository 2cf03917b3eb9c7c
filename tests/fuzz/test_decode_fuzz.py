"""Hostile values through the decoder, Arrow and a Parquet round trip (no services needed)."""

from __future__ import annotations

import pyarrow as pa
import pytest
import pyarrow.parquet as pq
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from app.landing import reason_of
from models.arrow import RECORD_KINDS
from models.transaction import InvalidRecord, decode
from tests.fuzz.hostile import hostile_values
from tests.fuzz.rows import expected_row

pytestmark = [pytest.mark.fuzz]

KINDS = list(RECORD_KINDS.values())
REASONS = {"not_utf8", "not_json", "invalid_record"}


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(kind=st.sampled_from(KINDS), data=st.data())
def test_decode_accepts_or_raises_invalid_record_and_accepted_records_round_trip_verbatim(kind, data):
    value = data.draw(hostile_values(kind.name), label="value")
    try:
        record = decode(kind.model, value)
    except InvalidRecord as rejected:
        event(reason_of(rejected))
        assert reason_of(rejected) in REASONS, rejected
        assert len(rejected.reason) <= 300 and "\n" not in rejected.reason
        return
    event("accepted")
    table = kind.to_table([record], [3], [2**40])
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="snappy")
    back = pq.read_table(pa.BufferReader(sink.getvalue()))
    assert back.schema.remove_metadata().equals(kind.schema)
    assert back.to_pylist() == [expected_row(kind, record, 3, 2**40)]
