"""The fast decoding path of the hot record kinds: msgspec twins of the pydantic models.

The pydantic models in :mod:`models.transaction` are the contract. Validating each Kafka value
with pydantic costs ~25 µs per transaction, most of the worker's CPU at tens of thousands of
messages per second. For the three stream record kinds this module declares msgspec ``Struct``
twins with the same fields and the same constraints, decoded in one C pass (~3 µs), with the
event timestamp then normalised by the very same function the pydantic model uses.

Contract of :func:`fast_decoder`: the decoder it returns either returns a record whose every
attribute (nested ones included) equals what ``model.model_validate_json`` gives for the same
bytes, or raises; it never accepts a value the pydantic model rejects. Anything it does not take
-- lower-case names, another ISO-8601 spelling, garbage -- the caller hands to pydantic, which
accepts it or says why not: reasons of dead letters always come from pydantic. The twins accept
only upper-case names (what ksqlDB writes) and a subset of what pydantic takes, never more:
``tests/unit/test_wire.py`` checks both paths agree over the model fixtures and generated inputs.

The returned records are msgspec Structs, not pydantic instances: they have the same attribute
names and value types (``str``, ``float``, ``int``, a ``list`` of products, an aware UTC
``datetime``), which is all the sinks read (Arrow columns, dimension rows). They are not
tracked by the garbage collector (``gc=False``: no reference cycles), which matters at a
million records a minute.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from models.transaction import (
    BlacklistedTransaction,
    FlattenedLine,
    Record,
    Transaction,
    event_timestamp_of,
)

__all__ = ["fast_decoder"]

# The constraints of models.transaction, spelled for msgspec. Patterns use \Z where pydantic's
# (Rust) `$` means end of text: Python's `$` would also match before a final newline.
_Id = Annotated[str, Meta(min_length=1, max_length=64)]
_Code = Annotated[str, Meta(pattern=r"^[A-Za-z_]{1,32}\Z")]
_Currency = Annotated[str, Meta(pattern=r"^[A-Z]{3}\Z")]
_Amount = Annotated[float, Meta(ge=-1e12, le=1e12)]
_Price = Annotated[float, Meta(ge=0)]
_Quantity = Annotated[int, Meta(ge=1, le=1_000_000)]
_Text64 = Annotated[str, Meta(min_length=1, max_length=64)]
_Text128 = Annotated[str, Meta(min_length=1, max_length=128)]
_Text255 = Annotated[str, Meta(min_length=1, max_length=255)]
_Email = Annotated[str, Meta(min_length=3, max_length=320, pattern=r"^[^@]+@[^@]+\Z")]
_WireTime = str | int  # replaced by event_timestamp_of's datetime right after decoding


class _Wire(msgspec.Struct, rename="upper", gc=False):
    """Base of the twins: UPPER-CASE names on the wire, unknown fields ignored."""


class _User(_Wire, frozen=True):
    id: _Id
    name: _Text255
    email: _Email
    country: _Text64
    city: _Text128


class _PaymentMethod(_Wire, frozen=True):
    id: _Id
    name: _Text128
    category: _Text64


class _Product(_Wire, frozen=True):
    id: _Id
    name: _Text255
    category: _Text64
    price: _Price
    quantity: _Quantity


class _Transaction(_Wire):
    transaction_id: _Id
    user: _User
    amount: _Amount
    currency: _Currency
    transaction_type: _Code
    payment_method: _PaymentMethod
    products: Annotated[list[_Product], Meta(min_length=1, max_length=1000)]
    status: _Code
    event_timestamp: _WireTime


class _BlacklistedTransaction(_Transaction):
    blacklist_reason: Annotated[str, Meta(min_length=1, max_length=512)]


class _FlattenedLine(_Wire):
    transaction_id: _Id
    line_number: Annotated[int, Meta(ge=1, le=1000)]
    user_id: _Id
    user_country: _Text64
    amount: _Amount
    currency: _Currency
    transaction_type: _Code
    payment_method_id: _Id
    payment_method_name: _Text128
    product_id: _Id
    product_name: _Text255
    product_category: _Text64
    product_price: _Price
    product_quantity: _Quantity
    line_total: float
    status: _Code
    event_timestamp: _WireTime


_TWINS: dict[type[Record], type[_Wire]] = {
    Transaction: _Transaction,
    BlacklistedTransaction: _BlacklistedTransaction,
    FlattenedLine: _FlattenedLine,
}


def fast_decoder(model: type[Record]) -> Callable[[bytes], Any] | None:
    """The fast decoder of ``model``'s values, or None if the model has no twin (use pydantic).

    The decoder raises (any exception) for whatever it does not accept; see the module docstring.
    """
    twin = _TWINS.get(model)
    if twin is None:
        return None
    decode = msgspec.json.Decoder(twin).decode

    def decode_fast(raw: bytes) -> Any:
        record = decode(raw)
        record.event_timestamp = event_timestamp_of(record.event_timestamp)
        return record

    return decode_fast
