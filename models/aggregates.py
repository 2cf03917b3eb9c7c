"""How transactions aggregate into the four tables: pure functions, shared with ``ksql/``.

The semantics are those of the statements in ``ksql/03_tables.sql`` (keep both in step; the unit
test ``tests/unit/test_money_semantics.py`` evaluates the statements' arithmetic against this module):

=============================  ============================  =====================================================
table                          key                           rows that count, and what is summed
=============================  ============================  =====================================================
user_transaction_summary       user id, transaction type     STATUS = 'COMPLETED'; the amount in cents
user_transaction_summary_eur   user id, transaction type     STATUS = 'COMPLETED'; cents * rate(CURRENCY → EUR)
payment_method_totals          payment method id             STATUS = 'COMPLETED'; EUR amount, REFUND negative
product_purchase_counts        product id                    STATUS = 'COMPLETED' and TRANSACTION_TYPE = 'PURCHASE';
                                                              per product line: units, unit price in cents * quantity,
                                                              buyers
=============================  ============================  =====================================================

Money follows :mod:`models.money`: an amount or a unit price counts in cents (ksqlDB's
``CAST(x AS DECIMAL(15, 2))``), everything after that is exact, and totals are rounded half-up to
cents, averages to 4 decimals, only on output. A transaction in a currency without a configured
rate adds nothing to the two EUR-valued tables (ksqlDB's inner join with ``EXCHANGE_RATES`` drops it
likewise). ``avg_*`` is the total divided by the count; ``avg_price`` is the mean unit price over
product lines; ``unique_buyers`` is exact (ksqlDB's ``COUNT_DISTINCT`` is an estimate).

Exactly once: every contribution carries its source position (transaction topic partition and
offset). A key's state records, per source partition, the highest offset it absorbed (its
*watermark*); :meth:`Aggregator.fold` skips a contribution at or below it, so replaying a
contribution after a crash changes nothing. Contributions of one source partition reach a key in
offset order (one producer, one delta partition per key), which makes the watermark sufficient.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from typing import Any

import msgspec

from models.money import AVERAGE, EXACT, TOTAL, cents, rounded
from models.tables import TABLES, TableSpec, encode_key
from models.transaction import Transaction, construct_trusted

__all__ = ["AGGREGATORS", "Aggregator", "Buyers", "contributions"]

COMPLETED = "COMPLETED"
PURCHASE = "PURCHASE"
REFUND = "REFUND"

State = dict[str, Any]
"""A key's aggregate as JSON-friendly values (decimals as strings); ``wm`` maps partition → offset."""


def contributions(
    tx: Transaction, partition: int, offset: int, rates: Mapping[str, Decimal]
) -> Iterator[tuple[str, bytes, list[Any]]]:
    """What one transaction adds to each table: ``(table, key bytes, contribution)`` triples.

    A contribution is a JSON-friendly list that starts with the source ``[partition, offset]``;
    a transaction makes at most one contribution per table and key.
    """
    if tx.status != COMPLETED:
        return
    source = [partition, offset]
    amount = cents(tx.amount)
    user_key = (tx.user.id, tx.transaction_type)
    yield "user_transaction_summary", _key("user_transaction_summary", user_key), [*source, str(amount)]
    rate = rates.get(tx.currency)
    if rate is not None:
        eur = EXACT.multiply(amount, rate)
        yield "user_transaction_summary_eur", _key("user_transaction_summary_eur", user_key), [*source, str(eur), str(rate)]
        signed = eur.copy_negate() if tx.transaction_type == REFUND else eur
        method = tx.payment_method
        yield "payment_method_totals", _key("payment_method_totals", (method.id,)), [*source, str(signed), method.name]
    if tx.transaction_type == PURCHASE:
        # One contribution per product and transaction (a product can be on several lines):
        # the watermark admits one contribution per source offset and key.
        lines: dict[str, list[Any]] = {}
        for line in tx.products:
            price = cents(line.price)
            merged = lines.setdefault(line.id, [0, Decimal(0), Decimal(0), 0, line.name, line.category])
            merged[0] += line.quantity
            merged[1] = EXACT.add(merged[1], EXACT.multiply(price, line.quantity))
            merged[2] = EXACT.add(merged[2], price)
            merged[3] += 1
        for product, (units, revenue, prices, count, name, category) in lines.items():
            yield "product_purchase_counts", _key("product_purchase_counts", (product,)), [
                *source, units, str(revenue), str(prices), count, tx.user.id, name, category,
            ]


def _key(table: str, key: tuple[str, ...]) -> bytes:
    return encode_key(TABLES[table], key)


class Buyers:
    """Which users bought a product, and the contribution that first made each a buyer.

    A mapping ``"<product>\\x1f<user>" -> [partition, offset]``, backed by a changelog-backed
    table. Remembering the *first* contribution keeps ``unique_buyers`` exact on replay: a replayed
    contribution that created the entry counts again only if the product's own state did not
    absorb it (its watermark decides), and any other contribution of that user never counts.
    """

    def __init__(self, store: Any) -> None:
        self.store = store

    def is_new_buyer(self, product: str, user: str, source: list[int]) -> bool:
        key = f"{product}\x1f{user}"
        first = self.store.get(key)
        if first is None:
            self.store[key] = source
            return True
        return list(first) == source


@dataclass(frozen=True)
class Aggregator:
    """Folds contributions into one table's key state and renders the table's value."""

    spec: TableSpec

    def fold(self, state: State | None, contributions: Iterable[list[Any]], key: str, buyers: Buyers | None = None) -> State:
        """Apply ``contributions`` (in source order) to a copy of ``state``; skips those at or below the watermark."""
        copied = _copy(state)
        self.absorb(copied, contributions, key, buyers)
        return copied

    def absorb(self, state: State, contributions: Iterable[list[Any]], key: str, buyers: Buyers | None = None) -> int:
        """Apply ``contributions`` (in source order) to ``state`` in place; returns how many it absorbed.

        Contributions at or below the key's watermark for their source partition are skipped, so
        a replay absorbs nothing and leaves ``state`` as it was. ``state`` must be a state of this
        table (``{"wm": {}}`` for a new key).
        """
        marks: dict[str, int] = state["wm"]
        absorbed = 0
        for contribution in contributions:
            partition, offset = str(contribution[0]), contribution[1]
            if offset <= marks.get(partition, -1):
                continue
            marks[partition] = offset
            self._add(state, contribution, key, buyers)
            absorbed += 1
        return absorbed

    def _add(self, state: State, c: list[Any], key: str, buyers: Buyers | None) -> None:
        name = self.spec.name
        state["count"] = state.get("count", 0) + (c[2] if name == "product_purchase_counts" else 1)
        if name == "user_transaction_summary":
            state["total"] = _sum(state.get("total"), c[2])
        elif name == "user_transaction_summary_eur":
            state["total"] = _sum(state.get("total"), c[2])
            state["rate"] = c[3]
        elif name == "payment_method_totals":
            state["total"] = _sum(state.get("total"), c[2])
            state["name"] = c[3]
        else:  # product_purchase_counts: [p, o, units, revenue, price sum, lines, user, name, category]
            state["total"] = _sum(state.get("total"), c[3])
            state["price_sum"] = _sum(state.get("price_sum"), c[4])
            state["lines"] = state.get("lines", 0) + c[5]
            state["name"], state["category"] = c[7], c[8]
            if buyers is not None and buyers.is_new_buyer(key, c[6], c[:2]):
                state["buyers"] = state.get("buyers", 0) + 1

    def value(self, state: State) -> Any:
        """The table's value record for ``state`` (what ksqlDB would emit for the key)."""
        return construct_trusted(self.spec.model, **dict(zip(self._fields, self._row(state), strict=True)))

    def value_json(self, state: State) -> bytes:
        """``encode_value(self.value(state))`` without building the record: the ksqlDB-format value bytes.

        The same JSON (names, order, nulls, decimals as exact numbers) at a fraction of the cost:
        it runs for every key a flush writes.
        """
        return _ENCODER.encode(dict(zip(self._names, self._row(state), strict=True)))

    @cached_property
    def _fields(self) -> tuple[str, ...]:
        return self.spec.value_columns

    @cached_property
    def _names(self) -> tuple[str, ...]:
        return tuple(field.upper() for field in self.spec.value_columns)

    def _row(self, state: State) -> tuple[Any, ...]:
        """The value columns for ``state``, in the model's field order."""
        total, count = Decimal(state.get("total", "0")), state.get("count", 0)
        name = self.spec.name
        if name == "product_purchase_counts":
            lines = state.get("lines", 0)
            return (
                state.get("name"),
                state.get("category"),
                count,
                rounded(total, TOTAL),
                _average(Decimal(state["price_sum"]), lines),
                state.get("buyers", 0),
            )
        average = _average(total, count)
        if name == "user_transaction_summary":
            return rounded(total, TOTAL), count, average
        if name == "user_transaction_summary_eur":
            return rounded(total, TOTAL), count, average, Decimal(state["rate"]) if "rate" in state else None
        return state.get("name"), rounded(total, TOTAL), count, average


_ENCODER = msgspec.json.Encoder(decimal_format="number")


def _sum(total: str | None, addend: str) -> str:
    """An exact sum of two decimals kept as text in the state."""
    return str(EXACT.add(Decimal(total or "0"), Decimal(addend)))


def _average(total: Decimal, count: int) -> Decimal | None:
    """``total / count`` rounded half-up to the average columns' scale (None without rows)."""
    return rounded(EXACT.divide(total, count), AVERAGE) if count else None


def _copy(state: State | None) -> State:
    if state is None:
        return {"wm": {}}
    copied = dict(state)
    copied["wm"] = dict(state.get("wm", {}))
    return copied


AGGREGATORS: dict[str, Aggregator] = {name: Aggregator(spec) for name, spec in TABLES.items()}
"""One aggregator per table."""


def group_by_key(triples: Iterable[tuple[str, bytes, list[Any]]]) -> dict[str, dict[bytes, list[list[Any]]]]:
    """``{table: {key: [contribution, ...]}}``, contributions in input order."""
    grouped: dict[str, dict[bytes, list[list[Any]]]] = defaultdict(lambda: defaultdict(list))
    for table, key, contribution in triples:
        grouped[table][key].append(contribution)
    return grouped
