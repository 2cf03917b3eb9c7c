"""Transaction records as ksqlDB writes them to Kafka, and their decoding.

The wire format is ksqlDB's JSON value format: one JSON object per message, field names in
UPPER CASE at every nesting level (ksqlDB upper-cases unquoted identifiers, struct fields
included). Lower-case names are accepted too, so hand-written producers and ksqlDB-free feeds
decode alike; serialisation (`to_wire`) always writes UPPER CASE.

Validation is strict: no coercion between JSON types (a string amount, a float quantity, a list
where a string belongs are all rejected), floats must be finite (JSON `NaN`/`Infinity` tokens are
rejected), unknown fields are ignored (schema drift in ksqlDB must not stop the feed).

Event timestamps are UTC, millisecond precision (ksqlDB TIMESTAMP): ISO-8601 strings and epoch
milliseconds are accepted, a naive time is taken as UTC, sub-millisecond digits are truncated and
years outside 1970..2200 are rejected. Because of the truncation, `to_wire` round-trips exactly:
`Transaction.model_validate_json(to_wire(tx)) == tx`.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, TypeVar

from pydantic import (
    AliasChoices,
    AliasGenerator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
)

from models.money import MAX_INPUT

__all__ = [
    "BlacklistedTransaction",
    "EventTimestamp",
    "FlattenedLine",
    "InvalidRecord",
    "PaymentMethod",
    "Product",
    "RECORD_MODELS",
    "Record",
    "Rejection",
    "Transaction",
    "User",
    "construct_trusted",
    "decode",
    "event_timestamp_of",
    "invalid_record",
    "to_wire",
    "wire_timestamp",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_YEAR, _MAX_YEAR = 1970, 2200


def event_timestamp_of(value: object) -> datetime:
    """Validate an event timestamp: ISO-8601 string, epoch milliseconds or datetime → UTC ms."""
    if type(value) is str:
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("not an ISO-8601 timestamp") from None
    elif type(value) is int:
        try:
            value = _EPOCH + timedelta(milliseconds=value)
        except OverflowError:
            raise ValueError("epoch milliseconds out of range") from None
    elif not isinstance(value, datetime):
        raise ValueError("expected an ISO-8601 string or epoch milliseconds")
    zone = value.tzinfo
    if zone is None:
        value = value.replace(tzinfo=UTC)
    elif zone is not UTC:
        value = value.astimezone(UTC)
    if not _MIN_YEAR <= value.year <= _MAX_YEAR:
        raise ValueError(f"year {value.year} outside {_MIN_YEAR}..{_MAX_YEAR}")
    # Skipping no-op calls matters: this runs once per record on the hot path.
    sub_millis = value.microsecond % 1000
    return value.replace(microsecond=value.microsecond - sub_millis) if sub_millis else value


def wire_timestamp(value: datetime) -> str:
    """`2026-11-24T10:15:30.123Z`: the wire form of an event timestamp (always UTC)."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


EventTimestamp = Annotated[
    datetime,
    PlainValidator(event_timestamp_of),
    PlainSerializer(wire_timestamp, return_type=str, when_used="json"),
]
"""UTC instant with millisecond precision; ISO-8601 or epoch milliseconds in, ISO-8601 `Z` out."""

_Id = Annotated[str, Field(min_length=1, max_length=64)]
_Code = Annotated[str, Field(pattern=r"^[A-Za-z_]{1,32}$")]
_Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
# Money inputs are bounded (models.money.MAX_INPUT) so that every figure derived from them fits its
# warehouse column: an amount and a unit price fit ksqlDB's DECIMAL(15, 2), sums of them DECIMAL(38, 2).
_Amount = Annotated[float, Field(ge=-MAX_INPUT, le=MAX_INPUT)]
_Price = Annotated[float, Field(ge=0, le=MAX_INPUT)]
_Quantity = Annotated[int, Field(ge=1, le=1_000_000)]


class Record(BaseModel):
    """Base of every record on the wire: frozen, strict, finite floats, UPPER/lower-case names."""

    model_config = ConfigDict(
        frozen=True,
        strict=True,
        extra="ignore",
        allow_inf_nan=False,
        alias_generator=AliasGenerator(
            validation_alias=lambda name: AliasChoices(name.upper(), name),
            serialization_alias=str.upper,
        ),
    )


class User(Record):
    """The customer behind a transaction (ksqlDB struct `USER`)."""

    id: _Id
    name: str = Field(min_length=1, max_length=255)
    email: str = Field(min_length=3, max_length=320, pattern=r"^[^@]+@[^@]+$")
    country: str = Field(min_length=1, max_length=64)
    city: str = Field(min_length=1, max_length=128)


class PaymentMethod(Record):
    """How a transaction was paid (ksqlDB struct `PAYMENT_METHOD`)."""

    id: _Id
    name: str = Field(min_length=1, max_length=128)
    category: str = Field(min_length=1, max_length=64)


class Product(Record):
    """One product line of a transaction: a catalogue item and the quantity bought."""

    id: _Id
    name: str = Field(min_length=1, max_length=255)
    category: str = Field(min_length=1, max_length=64)
    price: _Price
    quantity: _Quantity


class Transaction(Record):
    """One event of `transaction_stream` (and, anonymised, of `transaction_stream_anonymized`)."""

    transaction_id: _Id
    user: User
    amount: _Amount
    currency: _Currency
    transaction_type: _Code
    payment_method: PaymentMethod
    products: list[Product] = Field(min_length=1, max_length=1000)
    status: _Code
    event_timestamp: EventTimestamp


class BlacklistedTransaction(Transaction):
    """One event of `transaction_stream_blacklisted`: a transaction and why it was flagged."""

    blacklist_reason: str = Field(min_length=1, max_length=512)


class FlattenedLine(Record):
    """One row of `transaction_flattened`: a product line with its transaction's scalar context."""

    transaction_id: _Id
    line_number: int = Field(ge=1, le=1000)
    user_id: _Id
    user_country: str = Field(min_length=1, max_length=64)
    amount: _Amount
    currency: _Currency
    transaction_type: _Code
    payment_method_id: _Id
    payment_method_name: str = Field(min_length=1, max_length=128)
    product_id: _Id
    product_name: str = Field(min_length=1, max_length=255)
    product_category: str = Field(min_length=1, max_length=64)
    product_price: _Price
    product_quantity: _Quantity
    line_total: float
    status: _Code
    event_timestamp: EventTimestamp


RECORD_MODELS: dict[str, type[Record]] = {
    "transaction": Transaction,
    "flattened_line": FlattenedLine,
    "blacklisted_transaction": BlacklistedTransaction,
}
"""Every stream record kind's model, by the kind's name (a feed's ``record``).

:data:`models.arrow.RECORD_KINDS` adds each kind's Arrow schema; the names are here, without
pyarrow, so that validating the feeds file does not import it.
"""

R = TypeVar("R", bound=Record)


def construct_trusted(model: type[R], **fields: object) -> R:
    """Build a record from values already known to be valid, without validating them.

    For derived and generated records only (their inputs were validated or made by us). Like
    `model_construct`, but every field must be given (no defaults, no aliases) and it costs
    about a sixth: it matters at tens of thousands of records per second.
    """
    record = model.__new__(model)
    object.__setattr__(record, "__dict__", fields)
    object.__setattr__(record, "__pydantic_fields_set__", set(fields))
    object.__setattr__(record, "__pydantic_extra__", None)
    object.__setattr__(record, "__pydantic_private__", None)
    return record


def to_wire(record: Record) -> bytes:
    """Serialise a record as ksqlDB would: compact JSON, UPPER-CASE names, ISO-8601 `Z` times."""
    return record.model_dump_json(by_alias=True).encode()


class Rejection(StrEnum):
    """Why a record was rejected: the stable label of its dead letter and of its metric."""

    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    INVALID_RECORD = "invalid_record"


class InvalidRecord(ValueError):
    """A Kafka value that is not a valid record: it can never land, so it is dead-lettered.

    ``kind`` is the :class:`Rejection` (typed: never parsed from the text); ``reason`` is one
    short line for humans, safe to log (it never echoes the payload).
    """

    def __init__(self, reason: str, kind: Rejection = Rejection.INVALID_RECORD) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


_MAX_REASON = 300


def decode(kind_model: type[R], raw: bytes) -> R:
    """Decode one Kafka value into `kind_model`, or raise `InvalidRecord` saying why not.

    The happy path is a single `model_validate_json` on the bytes (pydantic-core checks UTF-8
    and parses JSON itself); the cause of a failure is worked out only after it happened.
    """
    try:
        return kind_model.model_validate_json(raw)
    except ValidationError as exc:
        raise invalid_record(kind_model, raw, exc) from None


def invalid_record(kind_model: type[Record], raw: bytes | None, exc: ValidationError | None) -> InvalidRecord:
    """The :class:`InvalidRecord` explaining why ``raw`` is not a ``kind_model`` (``exc``: pydantic's verdict).

    Without ``exc`` (the value was refused before pydantic saw it) only the JSON-level reasons are given.
    """
    if not raw:
        return InvalidRecord("empty value")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return InvalidRecord(f"not UTF-8 (byte {err.start})", Rejection.NOT_UTF8)
    except AttributeError:
        return InvalidRecord(f"not bytes ({type(raw).__name__})")
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as err:
        return InvalidRecord(f"not JSON ({err.msg} at char {err.pos})", Rejection.NOT_JSON)
    except ValueError as err:  # valid JSON Python refuses: an integer beyond its digit limit
        return InvalidRecord(f"not JSON ({err})", Rejection.NOT_JSON)
    except RecursionError:  # pydantic-core stops at its own depth limit; json.loads overflows the stack
        return InvalidRecord("not JSON (nested too deeply)", Rejection.NOT_JSON)
    if not isinstance(parsed, dict):
        return InvalidRecord(f"not a JSON object ({type(parsed).__name__})")
    if exc is None:
        return InvalidRecord(f"invalid {_record_name(kind_model)}")
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "(record)"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    message = first["msg"].removeprefix("Value error, ")
    reason = f"invalid {_record_name(kind_model)}: {where}: {message}{more}"
    return InvalidRecord(reason if len(reason) <= _MAX_REASON else reason[: _MAX_REASON - 1] + "…")


def _record_name(kind_model: type[Record]) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", " ", kind_model.__name__).lower()
