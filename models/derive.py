"""The three derived ksqlDB streams as pure functions of one transaction.

`transaction_flattened` (`flatten`), `transaction_stream_anonymized` (`anonymize`) and
`transaction_stream_blacklisted` (`blacklisted`). They are what the demo producer writes in place
of ksqlDB, and what a ksqlDB-free mode of the worker can compute itself. Inputs are validated
records, so outputs are built without re-validation (`construct_trusted`).
"""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field, field_validator

from models.transaction import (
    BlacklistedTransaction,
    FlattenedLine,
    Transaction,
    User,
    construct_trusted,
)

__all__ = [
    "ANONYMIZED_EMAIL_DOMAIN",
    "Blacklist",
    "anonymize",
    "blacklist_reasons",
    "blacklisted",
    "flatten",
    "keyed_hash",
]

ANONYMIZED_EMAIL_DOMAIN = "anonymized.invalid"
"""Domain of anonymised e-mails: `.invalid` is reserved (RFC 2606), so it can never deliver."""


def flatten(tx: Transaction) -> list[FlattenedLine]:
    """One `FlattenedLine` per product line, numbered from 1, `line_total = price * quantity`."""
    user, method = tx.user, tx.payment_method
    return [
        construct_trusted(
            FlattenedLine,
            transaction_id=tx.transaction_id,
            line_number=number,
            user_id=user.id,
            user_country=user.country,
            amount=tx.amount,
            currency=tx.currency,
            transaction_type=tx.transaction_type,
            payment_method_id=method.id,
            payment_method_name=method.name,
            product_id=product.id,
            product_name=product.name,
            product_category=product.category,
            product_price=product.price,
            product_quantity=product.quantity,
            line_total=product.price * product.quantity,
            status=tx.status,
            event_timestamp=tx.event_timestamp,
        )
        for number, product in enumerate(tx.products, start=1)
    ]


@lru_cache(maxsize=65536)
def keyed_hash(key: bytes, value: str) -> str:
    """HMAC-SHA256 of the UTF-8 `value` under `key`, as 64 lower-case hex digits.

    Stable across runs and workers for one key; without the key it can neither be reversed
    nor recomputed from a guessed value (unlike a plain hash of a name or an e-mail).
    """
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def anonymize(tx: Transaction, key: bytes) -> Transaction:
    """A copy of `tx` whose user name and e-mail are replaced by keyed hashes.

    The name becomes `keyed_hash(key, name)`; the e-mail becomes
    `<keyed_hash(key, email)>@anonymized.invalid`, so it still satisfies the e-mail rule of
    `User` (exactly one "@") and the anonymised stream decodes with the same model. The user id,
    country and city are kept: they are what the warehouse joins and aggregates on.
    """
    user = tx.user
    masked = construct_trusted(
        User,
        **{
            **user.__dict__,
            "name": keyed_hash(key, user.name),
            "email": f"{keyed_hash(key, user.email)}@{ANONYMIZED_EMAIL_DOMAIN}",
        },
    )
    return construct_trusted(Transaction, **{**tx.__dict__, "user": masked})


class Blacklist(BaseModel):
    """What makes a transaction blacklisted. Any one match is enough.

    `users` and `payment_methods` are ids, matched exactly; `email_domains` (the part after "@")
    and `countries` are matched case-insensitively: both sides lower-cased, as ksqlDB's `LCASE`
    does in `ksql/01_streams.sql` (not case-folded: `casefold` also rewrites letters such as "ß",
    which `LCASE` keeps).
    """

    model_config = ConfigDict(frozen=True)

    users: frozenset[str] = Field(frozenset(), description="User ids whose transactions are blacklisted (exact match).")
    email_domains: frozenset[str] = Field(
        frozenset(), description="E-mail domains (the part after @) whose users are blacklisted, case-insensitive."
    )
    countries: frozenset[str] = Field(frozenset(), description="User countries that are blacklisted, case-insensitive.")
    payment_methods: frozenset[str] = Field(
        frozenset(), description="Payment method ids that are blacklisted (exact match)."
    )

    @field_validator("*", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        """A string is a comma-separated list (``"RU, BY"``; ``""`` is empty), as environment variables write lists."""
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("email_domains", "countries")
    @classmethod
    def _lower(cls, values: frozenset[str]) -> frozenset[str]:
        return frozenset(value.lower() for value in values)


def blacklist_reasons(tx: Transaction, blacklist: Blacklist) -> list[str]:
    """Every rule of `blacklist` that `tx` matches, e.g. `["user:U00042", "country:XX"]`.

    Order: user, email_domain, country, payment_method; values as written in the transaction.
    """
    user = tx.user
    reasons = []
    if user.id in blacklist.users:
        reasons.append(f"user:{user.id}")
    domain = user.email.rpartition("@")[2]
    if domain.lower() in blacklist.email_domains:
        reasons.append(f"email_domain:{domain}")
    if user.country.lower() in blacklist.countries:
        reasons.append(f"country:{user.country}")
    if tx.payment_method.id in blacklist.payment_methods:
        reasons.append(f"payment_method:{tx.payment_method.id}")
    return reasons


def blacklisted(tx: Transaction, blacklist: Blacklist) -> BlacklistedTransaction | None:
    """`tx` as a `BlacklistedTransaction` (reasons joined with "; "), or None if it is clean."""
    reasons = blacklist_reasons(tx, blacklist)
    if not reasons:
        return None
    return construct_trusted(
        BlacklistedTransaction, **tx.__dict__, blacklist_reason="; ".join(reasons)
    )
