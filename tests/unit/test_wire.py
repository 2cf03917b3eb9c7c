"""The fast decoders (models.wire) agree with the pydantic models on every input.

Agreement means: whatever the fast decoder accepts, pydantic accepts too and gives the very
same values (types, time zone and precision of the timestamp included); whatever pydantic
rejects, the fast decoder rejects (the landing then asks pydantic why). The inputs are the
model fixtures of test_models.py, the generator's records of every kind, and a few hundred
seeded mutations of valid values (wrong types, edge lengths, trailing newlines, other time
spellings, lower-case or duplicate names, broken bytes).
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from pydantic import ValidationError, field_validator

from models.derive import Blacklist, blacklisted, flatten
from models.transaction import BlacklistedTransaction, FlattenedLine, Record, Transaction, User, to_wire
from models.wire import fast_decoder
from tests.unit import test_models
from tools.loadgen import generate

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


def plain(value: Any) -> Any:
    """A record as nested builtins, each leaf with its type (1 and 1.0 differ), whichever path made it."""
    if isinstance(value, Record):
        return {name: plain(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, msgspec.Struct):
        return {name: plain(getattr(value, name)) for name in value.__struct_fields__}
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, datetime):
        return (datetime, value.isoformat(), value.tzinfo)
    return (type(value), value)


def pydantic_result(model: type[Record], raw: bytes) -> Record | None:
    try:
        return model.model_validate_json(raw)
    except ValidationError:
        return None


def fast_result(model: type[Record], raw: bytes) -> Any:
    decode = fast_decoder(model)
    assert decode is not None
    try:
        return decode(raw)
    except Exception:  # noqa: BLE001 - any refusal hands the value to pydantic
        return None


def assert_agree(model: type[Record], raw: bytes) -> Any:
    """Both paths agree on ``raw``; returns the fast result (None: refused)."""
    expected, got = pydantic_result(model, raw), fast_result(model, raw)
    if got is not None:
        assert expected is not None, f"fast path accepted what pydantic rejects: {raw[:300]!r}"
        assert plain(got) == plain(expected), raw[:300]
    return got


def test_a_model_a_twin_cannot_express_has_no_fast_decoder() -> None:
    class WithDefault(Record):
        note: str = "-"

    class WithValidator(Record):
        note: str

        @field_validator("note")
        @classmethod
        def _shout(cls, value: str) -> str:
            return value.upper()

    class WithNestedTime(Record):
        line: FlattenedLine

    assert fast_decoder(WithDefault) is None
    assert fast_decoder(WithNestedTime) is None
    assert fast_decoder(WithValidator) is None
    assert fast_decoder(User) is not None  # plain constrained fields: it has one


def test_the_generators_records_take_the_fast_path_with_equal_values() -> None:
    txs = list(generate(200, seed=7, now=NOW))
    rules = Blacklist(countries=frozenset({tx.user.country for tx in txs[:20]}))
    cases: list[tuple[type[Record], Record]] = [(Transaction, tx) for tx in txs]
    cases += [(FlattenedLine, line) for tx in txs for line in flatten(tx)]
    cases += [(BlacklistedTransaction, flagged) for tx in txs if (flagged := blacklisted(tx, rules))]
    assert {model for model, _ in cases} == {Transaction, FlattenedLine, BlacklistedTransaction}
    for model, record in cases:
        assert assert_agree(model, to_wire(record)) is not None


def test_the_model_fixtures_agree() -> None:
    (garbage,) = (mark for mark in test_models.test_garbage_is_rejected_with_a_reason.pytestmark)
    for value, _reason in garbage.args[1]:
        assert assert_agree(Transaction, value) is None  # all garbage: refused by both
    (times,) = test_models.test_event_timestamp_forms.pytestmark
    for wire_time, _expected in times.args[1]:
        assert assert_agree(Transaction, test_models.raw(EVENT_TIMESTAMP=wire_time)) is not None
    assert assert_agree(Transaction, test_models.raw()) is not None
    assert assert_agree(Transaction, test_models.raw(ROWTIME=1, NEW_COLUMN="x")) is not None
    # Lower-case names are pydantic's job: the fast path refuses, the landing falls back.
    lower = test_models.raw(test_models.lower_keys(test_models.WIRE))
    assert fast_result(Transaction, lower) is None and pydantic_result(Transaction, lower) is not None


_ODD_VALUES: list[object] = [
    "", "x", "x" * 64, "x" * 65, "x" * 256, "é" * 255, "é" * 256, "ABC", "ABC\n", "abc", "EUR ", " EUR",
    "A" * 32, "A" * 33, "A_B", "a@b", "a@b\n", "a@b@c", "@b", "a@", "ab", 0, 1, -1, 2, 1_000_000, 1_000_001,
    1.0, 1.5, -0.0, 0.0, -0.01, 1e12, 1e12 + 1, -1e12, 1e300, 10**20, 10**40, -(10**40), True, False, None,
    [], {}, ["a"], {"ID": "x"}, "2026-11-24T10:15:30Z", "2026-11-24 10:15:30", "2026-11-24t10:15:30z",
    "2026-11-24T10:15:30.1234567Z", "2026-11-24T10:15:30+05:30", "2026-11-24", "2026-W48-2",
    "1969-12-31T23:59:59Z", "2201-01-01T00:00:00Z", "20261124T101530Z", 1_764_000_000_123, -1, 10**15,
    "\u0000", "\u2028", "𝄞" * 64, "𝄞" * 65,
]
_FIELD_PATHS = [
    "TRANSACTION_ID", "USER", "USER.ID", "USER.NAME", "USER.EMAIL", "USER.COUNTRY", "USER.CITY", "AMOUNT",
    "CURRENCY", "TRANSACTION_TYPE", "PAYMENT_METHOD", "PAYMENT_METHOD.ID", "PAYMENT_METHOD.NAME",
    "PAYMENT_METHOD.CATEGORY", "PRODUCTS", "PRODUCTS.0", "PRODUCTS.0.ID", "PRODUCTS.0.NAME",
    "PRODUCTS.1.CATEGORY", "PRODUCTS.0.PRICE", "PRODUCTS.1.QUANTITY", "STATUS", "EVENT_TIMESTAMP",
]


@pytest.mark.parametrize("path", _FIELD_PATHS)
def test_every_field_with_every_odd_value_agrees(path: str) -> None:
    for value in _ODD_VALUES:
        assert_agree(Transaction, test_models.with_field(path, value))
        document = json.loads(test_models.with_field(path, value))
        assert_agree(BlacklistedTransaction, json.dumps({**document, "BLACKLIST_REASON": value}).encode())


def _mutations(rng: random.Random, count: int) -> list[bytes]:
    """Missing fields, names spelled otherwise or given twice, broken bytes."""
    values: list[bytes] = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.3:
            name = rng.choice([path for path in _FIELD_PATHS if "." not in path])
            values.append(test_models.without_field(name))
        elif kind < 0.6:
            text = test_models.raw().decode()
            name = rng.choice(_FIELD_PATHS).split(".")[-1]
            if rng.random() < 0.5:
                text = text.replace(f'"{name}"', f'"{name.lower()}"', 1)
            else:
                text = text.replace(f'"{name}": ', f'"{name}": null, "{name}": ', 1)
            values.append(text.encode())
        else:
            value = bytearray(test_models.raw())
            position = rng.randrange(len(value))
            value[position : position + 1] = rng.choice([b"\xff", b"\xc3", b"", b"\\", b'"', b"\n", b"NaN", b" "])
            values.append(bytes(value))
    return values


@pytest.mark.parametrize("seed", range(3))
def test_generated_inputs_agree(seed: int) -> None:
    for value in _mutations(random.Random(seed), 200):
        assert_agree(Transaction, value)


def test_flattened_line_mutations_agree() -> None:
    rng = random.Random(11)
    line = json.loads(to_wire(flatten(next(generate(1, seed=3, now=NOW)))[0]))
    for _ in range(300):
        document = dict(line)
        name = rng.choice(sorted(document))
        if rng.random() < 0.9:
            document[name] = rng.choice(_ODD_VALUES)
        else:
            del document[name]
        assert_agree(FlattenedLine, json.dumps(document, ensure_ascii=rng.random() < 0.5).encode())


def test_the_landing_decodes_a_mixed_batch_through_both_paths() -> None:
    from app.core.feeds import Feed
    from app.runtime.landing import FeedLanding, RawMessage

    feed = Feed(name="transaction_stream", topic="tx", record="transaction", dataset="streams/transaction_stream")
    landing = FeedLanding(feed, [], dead_letters=None, backoff=None)  # type: ignore[arg-type] # decode only
    values = [
        test_models.raw(),  # fast path
        test_models.raw(test_models.lower_keys(test_models.WIRE)),  # pydantic path
        test_models.with_field("CURRENCY", "EUR\n"),  # rejected by both
        None,  # a tombstone
        b"\xff{}",
        test_models.raw(EVENT_TIMESTAMP=1_764_000_000_123),
    ]
    messages = [RawMessage(3, 100 + i, b"k", value) for i, value in enumerate(values)]
    batch, rejected = landing.decode(3, messages)
    assert (batch.partition, batch.first_offset, batch.last_offset) == (3, 100, 105)
    assert list(batch.offsets) == [100, 101, 105]
    assert plain(batch.records[0]) == plain(batch.records[1]) == plain(Transaction.model_validate_json(values[0]))
    assert isinstance(batch.records[1], Transaction)  # lower-case names: decoded by pydantic
    assert batch.records[2].event_timestamp == datetime(2025, 11, 24, 16, 0, 0, 123000, tzinfo=UTC)
    assert [(letter.offset, letter.reason) for letter in rejected] == [
        (102, "invalid_record"), (103, "invalid_record"), (104, "not_utf8"),
    ]
    assert rejected[0].message.startswith("invalid transaction: CURRENCY: String should match pattern")
    assert rejected[1].message == "null value (tombstone) on a stream topic"


def test_both_paths_give_the_same_arrow_rows_and_dimension_rows() -> None:
    from models.arrow import RECORD_KINDS
    from models.dimensions import DIMENSIONS, latest_rows

    txs = list(generate(300, seed=9, now=NOW))
    raws = [to_wire(tx) for tx in txs]
    fast = [fast_result(Transaction, raw) for raw in raws]
    slow = [Transaction.model_validate_json(raw) for raw in raws]
    mixed = [f if i % 2 else s for i, (f, s) in enumerate(zip(fast, slow, strict=True))]
    kind = RECORD_KINDS["transaction"]
    positions = ([0] * len(raws), list(range(len(raws))))
    expected = kind.to_table(slow, *positions)
    assert kind.to_table(fast, *positions).equals(expected)
    assert kind.to_table(mixed, *positions).equals(expected)
    for dimension in DIMENSIONS.values():
        assert latest_rows(dimension, fast) == latest_rows(dimension, slow)
