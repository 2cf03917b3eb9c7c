"""Money in txlake: how an amount becomes a decimal, and how large each stored figure may be.

One semantics in both table modes (txlake's derivation and the ksqlDB statements in ``ksql/``;
docs/decisions/0018-money-semantics.md argues it):

1. **An amount counts in cents.** A money input (a transaction's ``AMOUNT``, a product line's
   ``PRICE``) is a JSON double. Its value is the double rounded half-up to 15 significant digits,
   then half-up to 2 decimals: exactly ksqlDB's ``CAST(x AS DECIMAL(15, 2))``, which builds
   ``new BigDecimal(x, new MathContext(15))`` and then ``setScale(2, HALF_UP)``. Every decimal of at
   most 15 significant digits survives the trip through a double and back (DBL_DIG = 15), so an
   amount is taken as written and rounded to cents: ``1.005`` is 1.01 (its double is
   1.00499999999999989…, which ``DECIMAL(18, 2)`` would have rounded to 1.00).
   Valid inputs (``|x| <= 1e12``) always fit ``DECIMAL(15, 2)``.
2. **Everything after that is exact.** EUR amounts are cents times the configured rate (at most
   8 decimals); sums are exact (:data:`EXACT` holds 96 digits, far beyond any column).
3. **Figures are rounded once, on output**, half-up (away from zero, as MariaDB rounds a DECIMAL):
   totals to cents (:data:`TOTAL`), averages to 4 decimals (:data:`AVERAGE`).

Sizes (:class:`Column`) are those of the warehouse columns, from which the table value models
take their bounds: a value the model accepts always fits its column.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal

__all__ = ["AMOUNT", "AVERAGE", "Column", "EXACT", "MAX_INPUT", "RATE", "TOTAL", "cents", "rounded"]

EXACT = Context(prec=96, rounding=ROUND_HALF_UP)
"""Arithmetic for sums and products: 96 significant digits, so nothing txlake adds is ever rounded."""

MAX_INPUT = 1e12
"""Bound of a money input (amount, unit price): ``-1e12 <= amount <= 1e12``, ``0 <= price <= 1e12``."""

_FIFTEEN_DIGITS = Context(prec=15, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class Column:
    """A ``DECIMAL(precision, scale)``: what it holds, and the value rounded to it."""

    precision: int
    scale: int

    @property
    def quantum(self) -> Decimal:
        return Decimal(1).scaleb(-self.scale)

    @property
    def limit(self) -> Decimal:
        """The smallest magnitude the column cannot hold once rounded half-up to its scale."""
        return EXACT.subtract(Decimal(10) ** (self.precision - self.scale), self.quantum / 2)

    def fits(self, value: Decimal) -> bool:
        return value.copy_abs() < self.limit

    def sql(self) -> str:
        return f"DECIMAL({self.precision},{self.scale})"


AMOUNT = Column(15, 2)
"""A money input in cents (ksqlDB ``CAST(AMOUNT AS DECIMAL(15, 2))``)."""
TOTAL = Column(38, 2)
"""A total: ksqlDB's widest DECIMAL, and every fact's ``total_*`` column."""
AVERAGE = Column(38, 4)
"""An average (``avg_*`` columns)."""
RATE = Column(18, 8)
"""An exchange rate to EUR (``exchange_rate``; ksqlDB ``RATE_TO_EUR``)."""


def cents(value: float) -> Decimal:
    """A money input's value (point 1 of the module docstring): ksqlDB's ``CAST(value AS DECIMAL(15, 2))``."""
    return _FIFTEEN_DIGITS.create_decimal_from_float(value).quantize(AMOUNT.quantum, rounding=ROUND_HALF_UP)


def rounded(value: Decimal, column: Column) -> Decimal:
    """``value`` rounded half-up to ``column``'s scale (the output of a total or an average)."""
    return value.quantize(column.quantum, rounding=ROUND_HALF_UP, context=EXACT)
