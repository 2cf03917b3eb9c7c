"""ksqlDB's DECIMAL arithmetic, re-implemented from its source for tests (no ksqlDB server runs here).

Java's ``BigDecimal`` is an unscaled integer and a scale; this module computes on such pairs with
Python integers only -- on purpose nothing from :mod:`decimal` or :mod:`models.money`, so that a test
comparing txlake's derivation with these results compares two independent implementations.

What ksqlDB does, and where (confluentinc/ksql):

* ``CAST(<DOUBLE> AS DECIMAL(p, s))`` -- ``DecimalUtil.cast(double, p, s)``:
  ``new BigDecimal(value, new MathContext(p))`` (the double's exact binary value, rounded half-up to
  ``p`` significant digits), the overflow check ``|v| < 10^(p - s)``, then ``setScale(s, HALF_UP)``.
* ``CAST(<DECIMAL> AS DECIMAL(p, s))`` -- ``DecimalUtil.cast(BigDecimal, p, s)``: the value as it is
  when ``p`` and ``s`` are its own, else the overflow check and ``setScale(s, HALF_UP)``.
* ``a * b`` on decimals -- ``SqlDecimal.multiply``: result ``DECIMAL(p1 + p2 + 1, s1 + s2)``, computed
  with ``MathContext(p, UNNECESSARY)`` (exact or an error); an INT operand is ``DECIMAL(10, 0)``.
* ``-a`` -- ``negate(new MathContext(p, UNNECESSARY))``.
* ``SUM`` of ``DECIMAL(p, s)`` -- ``DecimalSumKudaf``: the result keeps ``DECIMAL(p, s)``; each
  addition uses ``MathContext(p)`` and fails ("Numeric field overflow") once ``|sum| >= 10^(p - s)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

__all__ = ["KsqlDecimal", "NumericOverflow", "cast_double", "literal", "sum_decimals"]

INT_AS_DECIMAL = (10, 0)  # SqlTypes.INT_UPCAST_TO_DECIMAL


class NumericOverflow(ArithmeticError):
    """ksqlDB's "Numeric field overflow": the value does not fit DECIMAL(p, s)."""


def _round_half_up(numerator: int, divisor: int) -> int:
    """``numerator / divisor`` rounded half away from zero (Java's RoundingMode.HALF_UP)."""
    quotient, remainder = divmod(abs(numerator), divisor)
    if 2 * remainder >= divisor:
        quotient += 1
    return -quotient if numerator < 0 else quotient


def _digits(unscaled: int) -> int:
    return len(str(abs(unscaled))) if unscaled else 1


@dataclass(frozen=True)
class KsqlDecimal:
    """A value of type ``DECIMAL(precision, scale)``: ``unscaled * 10^-scale``."""

    unscaled: int
    scale: int
    precision: int

    @property
    def value(self) -> Decimal:
        return Decimal(self.unscaled).scaleb(-self.scale)

    def _set_scale(self, scale: int) -> int:
        """Java's ``setScale(scale, HALF_UP)``: the unscaled value at ``scale``."""
        if scale >= self.scale:
            return self.unscaled * 10 ** (scale - self.scale)
        return _round_half_up(self.unscaled, 10 ** (self.scale - scale))

    def with_scale(self, scale: int) -> KsqlDecimal:
        """``setScale(scale, HALF_UP)``, keeping the declared precision."""
        return KsqlDecimal(self._set_scale(scale), scale, self.precision)

    def cast(self, precision: int, scale: int) -> KsqlDecimal:
        if (precision, scale) == (self.precision, self.scale):
            return self
        _ensure_max(self.unscaled, self.scale, precision, scale)
        return KsqlDecimal(self._set_scale(scale), scale, precision)

    def __mul__(self, other: KsqlDecimal | int) -> KsqlDecimal:
        if isinstance(other, int):
            other = KsqlDecimal(other, 0, INT_AS_DECIMAL[0])
        precision = self.precision + other.precision + 1
        unscaled = self.unscaled * other.unscaled
        if _digits(unscaled) > precision:
            raise ArithmeticError("Rounding necessary")  # MathContext(p, UNNECESSARY)
        return KsqlDecimal(unscaled, self.scale + other.scale, precision)

    def __neg__(self) -> KsqlDecimal:
        return KsqlDecimal(-self.unscaled, self.scale, self.precision)


def _ensure_max(unscaled: int, value_scale: int, precision: int, scale: int) -> None:
    """``DecimalUtil.ensureMax``: ``|value| < 10^(precision - scale)``."""
    if abs(unscaled) >= 10 ** (precision - scale + value_scale):
        raise NumericOverflow(f"does not fit DECIMAL({precision}, {scale})")


def cast_double(value: float, precision: int, scale: int) -> KsqlDecimal:
    """``CAST(value AS DECIMAL(precision, scale))`` for a DOUBLE ``value``."""
    exact = Fraction(value)  # the double's binary value: numerator / 2^k
    k = exact.denominator.bit_length() - 1
    unscaled, value_scale = exact.numerator * 5**k, k  # new BigDecimal(double): exact, scale k
    excess = _digits(unscaled) - precision
    if excess > 0:  # MathContext(precision), HALF_UP
        unscaled, value_scale = _round_half_up(unscaled, 10**excess), value_scale - excess
        if _digits(unscaled) > precision:  # rounding carried into a new digit
            unscaled, value_scale = _round_half_up(unscaled, 10), value_scale - 1
    _ensure_max(unscaled, value_scale, precision, scale)
    return KsqlDecimal(unscaled, value_scale, precision).with_scale(scale)


def literal(text: str, precision: int, scale: int) -> KsqlDecimal:
    """A DECIMAL column value written as ``text`` (e.g. a rate inserted into ``EXCHANGE_RATES``)."""
    exact = Fraction(text)
    unscaled = exact * 10**scale
    if unscaled.denominator != 1:
        raise ValueError(f"{text} has more than {scale} decimals")
    _ensure_max(int(unscaled), scale, precision, scale)
    return KsqlDecimal(int(unscaled), scale, precision)


def sum_decimals(values: list[KsqlDecimal]) -> KsqlDecimal:
    """``SUM`` over ``DECIMAL(p, s)`` values (all of one type)."""
    precision, scale = values[0].precision, values[0].scale
    total = 0
    for item in values:
        assert (item.precision, item.scale) == (precision, scale)
        total += item.unscaled
        _ensure_max(total, scale, precision, scale)
    return KsqlDecimal(total, scale, precision)
