"""The three derived streams as Kafka messages, written the way ksqlDB writes them.

:mod:`models.derive` states what the derived streams *are* (records built from one transaction);
this module is their fast twin on the wire, for the worker's stream derivation
(:mod:`app.derived.sink`): one transaction in, its derived messages out, without building a
pydantic record per message. ``tests/unit/test_derived_messages.py`` holds the twin to the
semantics: for every generated transaction (pydantic records and the msgspec twins of
:mod:`models.wire` alike) each value decodes to exactly what ``to_wire(derive.f(tx))`` decodes to.

What a message is, per ``ksql/01_streams.sql`` (``CREATE STREAM … AS SELECT`` over
``TRANSACTION_STREAM``, whose key is ``TRANSACTION_ID`` in the ``KAFKA`` key format):

* **key** -- the transaction id as raw UTF-8 (``KAFKA`` format, inherited from the source
  stream), the same for every message derived from one transaction;
* **value** -- a JSON object, column names upper-cased as ksqlDB writes unquoted identifiers,
  in the ``SELECT``'s column order, ``TRANSACTION_ID`` included (copied into the value with
  ``AS_VALUE``); ``EVENT_TIMESTAMP`` as ``2026-11-24T10:15:30.123Z``;
* **timestamp** -- the event time in epoch milliseconds (the source stream declares
  ``TIMESTAMP = 'EVENT_TIMESTAMP'``, and ksqlDB stamps derived rows with their ``ROWTIME``).

Which partition a message goes to is the producer's business: ksqlDB's sink uses Kafka's
default partitioner (murmur2) on the key bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import msgspec

from models.derive import ANONYMIZED_EMAIL_DOMAIN, Blacklist, blacklist_reasons, keyed_hash
from models.transaction import wire_timestamp

__all__ = ["DERIVATIONS", "DerivedMessages"]

DERIVATIONS = {
    "flatten": "flattened_line",
    "anonymize": "transaction",
    "blacklist": "blacklisted_transaction",
}
"""The derived streams by derivation name (as ``feeds.toml`` names them) → the record kind they hold."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


class _Event(Protocol):
    """What the key and the timestamp read of a transaction (the pydantic model or its msgspec twin)."""

    @property
    def transaction_id(self) -> str: ...

    @property
    def event_timestamp(self) -> datetime: ...


class DerivedMessages:
    """Encodes what the derived streams hold for a transaction: ``(derivation, value)`` pairs.

    ``derivations`` are the streams wanted (keys of :data:`DERIVATIONS`); ``anonymization_key``
    and ``blacklist`` are the settings :mod:`models.derive` takes. A transaction is anything with
    the attributes of :class:`models.transaction.Transaction` (a pydantic record or its msgspec twin).
    """

    def __init__(self, derivations: Iterable[str], anonymization_key: bytes, blacklist: Blacklist) -> None:
        wanted = frozenset(derivations)
        unknown = wanted - set(DERIVATIONS)
        if unknown:
            raise ValueError(f"unknown derivations {sorted(unknown)}; known: {', '.join(DERIVATIONS)}")
        self._flatten = "flatten" in wanted
        self._anonymize = "anonymize" in wanted
        self._blacklist = "blacklist" in wanted
        self._key = anonymization_key
        self._rules = blacklist
        self._encode = msgspec.json.Encoder().encode

    @staticmethod
    def key(tx: _Event) -> bytes:
        """The message key of everything derived from ``tx``: its id in ksqlDB's KAFKA format."""
        return tx.transaction_id.encode()

    @staticmethod
    def timestamp_ms(tx: _Event) -> int:
        """The Kafka timestamp of everything derived from ``tx``: its event time (ksqlDB's ROWTIME)."""
        return (tx.event_timestamp - _EPOCH) // _MILLISECOND

    def values(self, tx: Any) -> list[tuple[str, bytes]]:
        """The derived values of one transaction, as ``(derivation, JSON value)`` in stream order.

        ``flatten`` gives one value per product line (``LINE_NUMBER`` from 1), ``anonymize`` one,
        ``blacklist`` one if a rule matches (none otherwise).
        """
        encode = self._encode
        out: list[tuple[str, bytes]] = []
        when = wire_timestamp(tx.event_timestamp)
        user, method = tx.user, tx.payment_method
        if self._flatten:
            for number, product in enumerate(tx.products, start=1):
                price, quantity = product.price, product.quantity
                out.append(("flatten", encode({
                    "TRANSACTION_ID": tx.transaction_id,
                    "LINE_NUMBER": number,
                    "USER_ID": user.id,
                    "USER_COUNTRY": user.country,
                    "AMOUNT": tx.amount,
                    "CURRENCY": tx.currency,
                    "TRANSACTION_TYPE": tx.transaction_type,
                    "PAYMENT_METHOD_ID": method.id,
                    "PAYMENT_METHOD_NAME": method.name,
                    "PRODUCT_ID": product.id,
                    "PRODUCT_NAME": product.name,
                    "PRODUCT_CATEGORY": product.category,
                    "PRODUCT_PRICE": price,
                    "PRODUCT_QUANTITY": quantity,
                    "LINE_TOTAL": price * quantity,
                    "STATUS": tx.status,
                    "EVENT_TIMESTAMP": when,
                })))
        reasons = blacklist_reasons(tx, self._rules) if self._blacklist else None
        if not (self._anonymize or reasons):
            return out
        payment = {"ID": method.id, "NAME": method.name, "CATEGORY": method.category}
        products = [
            {"ID": p.id, "NAME": p.name, "CATEGORY": p.category, "PRICE": p.price, "QUANTITY": p.quantity}
            for p in tx.products
        ]
        if self._anonymize:
            masked = {
                "ID": user.id,
                "NAME": keyed_hash(self._key, user.name),
                "EMAIL": f"{keyed_hash(self._key, user.email)}@{ANONYMIZED_EMAIL_DOMAIN}",
                "COUNTRY": user.country,
                "CITY": user.city,
            }
            out.append(("anonymize", encode(self._transaction(tx, masked, payment, products, when))))
        if reasons:
            plain = {"ID": user.id, "NAME": user.name, "EMAIL": user.email, "COUNTRY": user.country, "CITY": user.city}
            value = self._transaction(tx, plain, payment, products, when)
            value["BLACKLIST_REASON"] = "; ".join(reasons)
            out.append(("blacklist", encode(value)))
        return out

    @staticmethod
    def _transaction(
        tx: Any, user: dict[str, Any], payment: dict[str, Any], products: list[dict[str, Any]], when: str
    ) -> dict[str, Any]:
        return {
            "TRANSACTION_ID": tx.transaction_id,
            "USER": user,
            "AMOUNT": tx.amount,
            "CURRENCY": tx.currency,
            "TRANSACTION_TYPE": tx.transaction_type,
            "PAYMENT_METHOD": payment,
            "PRODUCTS": products,
            "STATUS": tx.status,
            "EVENT_TIMESTAMP": when,
        }
