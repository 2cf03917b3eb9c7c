"""Exchange rates to EUR, from a TOML file (``CURRENCY = "rate"``).

Rates are decimals written as strings so they are exact (``"0.92"``, not the double 0.92).
The file shipped with txlake (``exchange_rates.toml``) is the default; a deployment points
``tables.exchange_rates_file`` at its own.
"""

from __future__ import annotations

import re
import tomllib
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path

from app.core.errors import ConfigurationError

__all__ = ["load_rates"]

_CURRENCY = re.compile(r"^[A-Z]{3}$")


def load_rates(path: Path | None = None) -> dict[str, Decimal]:
    """``{currency: EUR per unit}``; raises :class:`ConfigurationError` naming the bad entry."""
    source = str(path) if path else "<builtin exchange_rates.toml>"
    try:
        text = Path(path).read_text("utf-8") if path else resources.files("app.tables").joinpath("exchange_rates.toml").read_text("utf-8")
        document = tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"cannot read exchange rates {source}: {exc}") from exc
    rates: dict[str, Decimal] = {}
    for currency, raw in document.items():
        if not _CURRENCY.match(currency):
            raise ConfigurationError(f"{source}: {currency!r} is not an ISO 4217 code")
        try:
            rate = Decimal(str(raw))
        except InvalidOperation:
            raise ConfigurationError(f"{source}: rate of {currency} is not a number: {raw!r}") from None
        if not rate.is_finite() or rate <= 0:
            raise ConfigurationError(f"{source}: rate of {currency} must be positive, got {raw!r}")
        rates[currency] = rate
    if not rates:
        raise ConfigurationError(f"{source}: no rates")
    return rates
