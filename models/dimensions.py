"""The warehouse's dimension tables and how a batch of transactions updates them.

Rule: **the latest event wins, by event time**. Within a batch, rows are
deduplicated per key keeping the record with the newest ``event_timestamp``
(a tie goes to the later offset). Across batches the upsert compares the
incoming ``last_event_at`` with the stored one, so a late event never
overwrites newer details. Never ``REPLACE``: it deletes the row first, and the
facts' ``ON DELETE CASCADE`` foreign keys would delete the facts with it.

An upsert also completes an *inferred* row (``is_inferred``: a placeholder a
fact created before its dimension arrived).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["DIMENSIONS", "Dimension", "latest_rows"]


def _upsert_sql(table: str, key: str, attributes: tuple[str, ...]) -> str:
    newer = "(last_event_at IS NULL OR VALUES(last_event_at) >= last_event_at)"
    assignments = [f"{column} = IF({newer}, VALUES({column}), {column})" for column in attributes]
    # MySQL applies the assignments left to right: last_event_at must come last,
    # after every comparison that reads its old value.
    assignments.append(f"is_inferred = IF({newer}, FALSE, is_inferred)")
    assignments.append("last_event_at = GREATEST(COALESCE(last_event_at, VALUES(last_event_at)), VALUES(last_event_at))")
    columns = (key, *attributes, "last_event_at")
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))}) "
        f"ON DUPLICATE KEY UPDATE {', '.join(assignments)}"
    )


@dataclass(frozen=True)
class Dimension:
    """A dimension table fed from records that carry its attributes."""

    table: str
    key_column: str
    attribute_columns: tuple[str, ...]
    record_kinds: frozenset[str]
    extract: Callable[[Any], tuple[Any, ...]]  # record -> (key, *attributes)

    @property
    def upsert_sql(self) -> str:
        return _upsert_sql(self.table, self.key_column, self.attribute_columns)


def latest_rows(dimension: Dimension, records: Iterable[Any]) -> list[tuple[Any, ...]]:
    """One row per key, from the record with the newest event time; sorted by key.

    Rows are ``(key, *attributes, last_event_at)`` with ``last_event_at`` a naive
    UTC datetime (the warehouse session runs in UTC). Sorting by key makes
    concurrent upserts take row locks in the same order (no deadlock cycles).
    """
    latest: dict[Any, tuple[datetime, tuple[Any, ...]]] = {}
    extract = dimension.extract
    for record in records:
        moment = record.event_timestamp
        row = extract(record)
        seen = latest.get(row[0])
        if seen is None or moment >= seen[0]:
            latest[row[0]] = (moment, row)
    return [(*row, _to_utc_naive(moment)) for _, (moment, row) in sorted(latest.items())]


def _to_utc_naive(moment: datetime) -> datetime:
    offset = moment.utcoffset()
    return (moment - offset).replace(tzinfo=None) if offset else moment.replace(tzinfo=None)


_TRANSACTIONS = frozenset({"transaction", "blacklisted_transaction"})

DIMENSIONS: dict[str, Dimension] = {
    "dim_users": Dimension(
        table="dim_users",
        key_column="user_id",
        attribute_columns=("user_name", "user_email", "user_country", "user_city"),
        record_kinds=_TRANSACTIONS,
        extract=lambda tx: (tx.user.id, tx.user.name, tx.user.email, tx.user.country, tx.user.city),
    ),
    "dim_payment_methods": Dimension(
        table="dim_payment_methods",
        key_column="payment_method_id",
        attribute_columns=("payment_method_name", "payment_method_category"),
        record_kinds=_TRANSACTIONS,
        extract=lambda tx: (tx.payment_method.id, tx.payment_method.name, tx.payment_method.category),
    ),
}
