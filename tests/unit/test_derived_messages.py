"""The derived streams on the wire: txlake's fast encoding equals models/derive.py and ksql/01_streams.sql.

Three sources must agree on what TRANSACTION_FLATTENED, TRANSACTION_STREAM_ANONYMIZED and
TRANSACTION_STREAM_BLACKLISTED hold: the semantics (:mod:`models.derive` serialised with
``to_wire``), the worker's fast encoder (:mod:`models.derived_messages`) and the ksqlDB statements
for teams that keep ksqlDB (``ksql/01_streams.sql``): value by value, column by column, key and
value format included.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest

from models.derive import Blacklist, anonymize, blacklist_reasons, blacklisted, flatten
from models.derived_messages import DERIVATIONS, DerivedMessages
from models.transaction import BlacklistedTransaction, FlattenedLine, Transaction, decode, to_wire
from models.wire import fast_decoder
from tests.ksql_statements import KSQL_DIR, select_list
from tools.loadgen import generate

KEY = b"derived-test-key"
RULES = Blacklist(users={"U00007"}, countries={"ru"}, email_domains={"EXAMPLE.SE"}, payment_methods={"PM-3"})
SQL = (KSQL_DIR / "01_streams.sql").read_text()
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def transactions() -> list[Transaction]:
    return list(generate(3000, seed=5, now=NOW))


def _expected(tx: Transaction) -> list[tuple[str, dict]]:
    """What models/derive.py says, serialised as the demo generator writes it."""
    out = [("flatten", json.loads(to_wire(line))) for line in flatten(tx)]
    out.append(("anonymize", json.loads(to_wire(anonymize(tx, KEY)))))
    flagged = blacklisted(tx, RULES)
    if flagged is not None:
        out.append(("blacklist", json.loads(to_wire(flagged))))
    return out


def test_every_value_equals_the_semantics_for_records_and_their_fast_twins(transactions):
    encoder = DerivedMessages(DERIVATIONS, KEY, RULES)
    twin = fast_decoder(Transaction)
    kinds = set()
    for tx in transactions:
        expected = _expected(tx)
        for source in (tx, twin(to_wire(tx))):
            got = [(derivation, json.loads(value)) for derivation, value in encoder.values(source)]
            assert got == expected, tx.transaction_id
            # Same column order as to_wire (and the SQL's SELECT lists, below).
            assert [list(value) for _, value in got] == [list(value) for _, value in expected]
        kinds.update(derivation for derivation, _ in expected)
    assert kinds == set(DERIVATIONS), "the load exercises every derivation, blacklist included"


def test_values_decode_with_the_feed_models(transactions):
    encoder = DerivedMessages(DERIVATIONS, KEY, RULES)
    models = {"flatten": FlattenedLine, "anonymize": Transaction, "blacklist": BlacklistedTransaction}
    for tx in transactions[:300]:
        decoded = [decode(models[derivation], value) for derivation, value in encoder.values(tx)]
        expected = [*flatten(tx), anonymize(tx, KEY)]
        flagged = blacklisted(tx, RULES)
        assert decoded == expected + ([flagged] if flagged else [])


def test_key_and_timestamp_are_the_transaction_id_and_its_event_time(transactions):
    tx = transactions[0]
    assert DerivedMessages.key(tx) == tx.transaction_id.encode()
    assert DerivedMessages.timestamp_ms(tx) == int(tx.event_timestamp.timestamp() * 1000 + 0.5)


def test_only_the_wanted_derivations_are_encoded(transactions):
    encoder = DerivedMessages(["anonymize"], KEY, RULES)
    assert {d for tx in transactions[:200] for d, _ in encoder.values(tx)} == {"anonymize"}
    assert DerivedMessages(["flatten", "blacklist"], KEY, Blacklist()).values(transactions[0])[-1][0] == "flatten"
    with pytest.raises(ValueError, match="unknown derivations"):
        DerivedMessages(["explode"], KEY, RULES)


def test_blacklist_matches_like_ksqldb_lcase():
    tx = next(generate(1, seed=1, now=NOW))
    tx = tx.model_copy(update={"user": tx.user.model_copy(update={"email": "anna@Straße.example", "country": "De"})})
    assert blacklist_reasons(tx, Blacklist(countries={"DE"}, email_domains={"STRASSE.example"})) == ["country:De"]
    assert blacklist_reasons(tx, Blacklist(email_domains={"STRAßE.EXAMPLE"})) == ["email_domain:Straße.example"]


# -- ksql/01_streams.sql: the same columns, the same key ------------------------------------------


def _value_columns(stream: str) -> list[str]:
    columns = [name for name, _ in select_list(SQL, stream)]
    assert columns[0] == "TX_KEY", f"{stream}: the key column comes first, renamed (ksqlDB keeps it out of the value)"
    assert re.search(rf"CREATE STREAM IF NOT EXISTS {stream}\b.*?TRANSACTION_ID\s+AS TX_KEY,\s*AS_VALUE\(TRANSACTION_ID\)",
                     SQL, re.S), f"{stream}: TRANSACTION_ID is copied into the value"
    return columns[1:]


@pytest.mark.parametrize(
    ("stream", "derivation"),
    [("TRANSACTION_FLATTENED", "flatten"), ("TRANSACTION_STREAM_ANONYMIZED", "anonymize"),
     ("TRANSACTION_STREAM_BLACKLISTED", "blacklist")],
)
def test_the_ksql_statements_write_the_same_columns_in_the_same_order(transactions, stream, derivation):
    encoder = DerivedMessages(DERIVATIONS, KEY, RULES)
    value = next(json.loads(v) for tx in transactions for d, v in encoder.values(tx) if d == derivation)
    assert _value_columns(stream) == list(value)
    statement = re.search(rf"CREATE STREAM IF NOT EXISTS {stream}\b.*?;", SQL, re.S).group(0)
    assert "VALUE_FORMAT = 'JSON'" in statement and "KEY_FORMAT" not in statement  # key format inherited


def test_the_source_stream_declares_the_key_and_the_struct_fields_the_encoder_writes(transactions):
    source = re.search(r"CREATE STREAM IF NOT EXISTS TRANSACTION_STREAM \((.*?)\) WITH \((.*?)\);", SQL, re.S)
    columns, options = source.group(1), source.group(2)
    assert "TRANSACTION_ID   STRING KEY" in columns and "KEY_FORMAT = 'KAFKA'" in options
    value = json.loads(DerivedMessages(["anonymize"], KEY, RULES).values(transactions[0])[0][1])
    assert f"USER             STRUCT<{', '.join(f'{k} STRING' for k in value['USER'])}>" in columns
    assert f"PAYMENT_METHOD   STRUCT<{', '.join(f'{k} STRING' for k in value['PAYMENT_METHOD'])}>" in columns
    assert "PRODUCTS         ARRAY<STRUCT<ID STRING, NAME STRING, CATEGORY STRING, PRICE DOUBLE, QUANTITY INT>>" in columns
    assert list(value["PRODUCTS"][0]) == ["ID", "NAME", "CATEGORY", "PRICE", "QUANTITY"]
