"""The derived streams: flattened lines, anonymised copies, blacklisted copies."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from models.derive import Blacklist, anonymize, blacklist_reasons, blacklisted, flatten
from models.transaction import BlacklistedTransaction, FlattenedLine, Transaction, decode, to_wire
from tests.unit.test_models import raw

KEY = b"secret-key"


@pytest.fixture
def tx() -> Transaction:
    return decode(Transaction, raw())


def test_flatten_one_line_per_product(tx: Transaction) -> None:
    lines = flatten(tx)
    assert [line.line_number for line in lines] == [1, 2]
    assert [line.product_id for line in lines] == ["P-001", "P-017"]
    assert [line.line_total for line in lines] == [25.0, 98.45]
    first = lines[0]
    assert (first.transaction_id, first.user_id, first.user_country) == ("TX-1", "U00042", "FR")
    assert (first.payment_method_id, first.payment_method_name) == ("PM-1", "VISA")
    assert (first.amount, first.currency, first.status) == (123.45, "EUR", "COMPLETED")
    assert first.event_timestamp == tx.event_timestamp
    assert lines[1].product_name == "ノルウェイの森"


def test_flattened_lines_are_valid_records(tx: Transaction) -> None:
    for line in flatten(tx):
        assert FlattenedLine.model_validate(line.model_dump()) == line
        assert decode(FlattenedLine, to_wire(line)) == line


def test_anonymize_replaces_name_and_email_with_keyed_hashes(tx: Transaction) -> None:
    masked = anonymize(tx, KEY)
    expected_name = hmac.new(KEY, "Zoë Dupont".encode(), hashlib.sha256).hexdigest()
    expected_email = hmac.new(KEY, b"zoe@example.fr", hashlib.sha256).hexdigest()
    assert masked.user.name == expected_name
    assert len(masked.user.name) == 64
    assert masked.user.email == f"{expected_email}@anonymized.invalid"
    assert (masked.user.id, masked.user.country, masked.user.city) == ("U00042", "FR", "Lyon")
    assert masked.products == tx.products and masked.amount == tx.amount


def test_anonymize_is_stable_keyed_and_leaves_the_original(tx: Transaction) -> None:
    assert anonymize(tx, KEY) == anonymize(decode(Transaction, raw()), KEY)
    other = anonymize(tx, b"another-key")
    assert other.user.name != anonymize(tx, KEY).user.name
    assert other.user.email != anonymize(tx, KEY).user.email
    assert tx.user.name == "Zoë Dupont" and tx.user.email == "zoe@example.fr"


def test_anonymized_transaction_decodes_with_the_same_model(tx: Transaction) -> None:
    masked = anonymize(tx, KEY)
    assert decode(Transaction, to_wire(masked)) == masked


@pytest.mark.parametrize(
    ("blacklist", "reasons"),
    [
        (Blacklist(), []),
        (Blacklist(users={"U00042"}), ["user:U00042"]),
        (Blacklist(users={"u00042"}), []),  # ids are exact
        (Blacklist(email_domains={"example.fr"}), ["email_domain:example.fr"]),
        (Blacklist(email_domains={"EXAMPLE.FR"}), ["email_domain:example.fr"]),
        (Blacklist(email_domains={"example"}), []),  # whole domain, not a suffix
        (Blacklist(countries={"fr"}), ["country:FR"]),
        (Blacklist(countries={"DE", "XX"}), []),
        (Blacklist(payment_methods={"PM-1"}), ["payment_method:PM-1"]),
        (Blacklist(payment_methods={"PM-9"}), []),
        (
            Blacklist(users={"U00042"}, email_domains={"Example.Fr"}, countries={"Fr"}, payment_methods={"PM-1"}),
            ["user:U00042", "email_domain:example.fr", "country:FR", "payment_method:PM-1"],
        ),
        (Blacklist(users={"U1"}, countries={"FR"}, payment_methods={"PM-1"}), ["country:FR", "payment_method:PM-1"]),
    ],
)
def test_blacklist_reasons(tx: Transaction, blacklist: Blacklist, reasons: list[str]) -> None:
    assert blacklist_reasons(tx, blacklist) == reasons


def test_email_domain_match_ignores_case_of_the_transaction(tx: Transaction) -> None:
    shouting = decode(Transaction, raw(USER={**tx.user.model_dump(by_alias=True), "EMAIL": "ZOE@EXAMPLE.FR"}))
    assert blacklist_reasons(shouting, Blacklist(email_domains={"example.fr"})) == ["email_domain:EXAMPLE.FR"]


def test_blacklisted_copies_the_transaction_with_its_reasons(tx: Transaction) -> None:
    assert blacklisted(tx, Blacklist(users={"U9"})) is None
    flagged = blacklisted(tx, Blacklist(users={"U00042"}, countries={"fr"}))
    assert isinstance(flagged, BlacklistedTransaction)
    assert flagged.blacklist_reason == "user:U00042; country:FR"
    assert Transaction.model_validate(flagged.model_dump(exclude={"blacklist_reason"})) == tx
    assert decode(BlacklistedTransaction, to_wire(flagged)) == flagged


def test_blacklist_is_frozen_and_case_folded() -> None:
    blacklist = Blacklist(countries={"Fr"}, email_domains={"Spam.Example"})
    assert blacklist.countries == frozenset({"fr"})
    assert blacklist.email_domains == frozenset({"spam.example"})
    with pytest.raises(ValueError):
        blacklist.users = frozenset({"U1"})  # type: ignore[misc]
