"""The fast decoding path of the records: msgspec twins derived from the pydantic models.

The pydantic models in :mod:`models.transaction` are the contract. Validating each Kafka value
with pydantic costs ~25 µs per transaction, most of the worker's CPU at tens of thousands of
messages per second. For a model whose fields this module can express, it derives a msgspec
``Struct`` twin -- the same fields, the same constraints, read from the model's own field
metadata, so the two never drift apart -- decoded in one C pass (~3 µs); event timestamps are
then normalised by the very function the model uses (``event_timestamp_of``).

Contract of :func:`fast_decoder`: the decoder it returns either returns a record whose every
attribute (nested ones included) equals what ``model.model_validate_json`` gives for the same
bytes, or raises; it never accepts a value the pydantic model rejects. Whatever it refuses --
lower-case names, a duplicated name, garbage -- the caller hands to pydantic, which accepts it
or says why not: the reasons of dead letters always come from pydantic. The twins accept only
UPPER-CASE names (what ksqlDB writes). ``tests/unit/test_wire.py`` checks that both paths agree
over the model fixtures, the generator's records and a few thousand odd inputs.

The records are msgspec Structs, not pydantic instances: same attribute names and value types
(``str``, ``float``, ``int``, a ``list`` of nested records, an aware UTC ``datetime``), which is
all the sinks read (Arrow columns, dimension rows). The garbage collector does not track them
(``gc=False``: they hold no reference cycles).

What a twin can express (anything else: no twin, pydantic decodes): a strict, frozen ``Record``
with ``extra="ignore"``, no infinite floats, the UPPER/lower alias generator and no validator
methods; required fields of type ``str``, ``int``, ``float``, a nested such record, or a
``list`` of those, constrained by min/max length, ge/le/gt/lt and ``pattern``; and top-level
``EventTimestamp`` fields.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import GenericAlias
from typing import Annotated, Any, get_args, get_origin

import annotated_types
import msgspec
from msgspec import Meta
from msgspec.structs import force_setattr
from pydantic import AliasChoices, PlainSerializer, PlainValidator
from pydantic.fields import FieldInfo

from models.transaction import Record, event_timestamp_of

__all__ = ["fast_decoder"]

_EXPECTED_CONFIG = {"strict": True, "extra": "ignore", "allow_inf_nan": False}
_BOUNDS = {
    annotated_types.MinLen: "min_length",
    annotated_types.MaxLen: "max_length",
    annotated_types.Ge: "ge",
    annotated_types.Le: "le",
    annotated_types.Gt: "gt",
    annotated_types.Lt: "lt",
}


class _NoTwin(Exception):
    """The model uses something a twin cannot express: pydantic decodes it alone."""


def _pattern(pattern: str) -> str:
    # pydantic matches with Rust's regex, where a final `$` means the end of the text; in
    # Python's `re` it also matches before a final newline. `\Z` is Python's end of text.
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        return pattern[:-1] + r"\Z"
    return pattern


def _constraints(metadata: list[Any]) -> tuple[dict[str, Any], bool]:
    """msgspec ``Meta`` arguments of a field's pydantic metadata, and whether it is an event time."""
    meta: dict[str, Any] = {}
    event_time = False
    for item in metadata:
        if type(item) in _BOUNDS:
            name = _BOUNDS[type(item)]
            meta[name] = getattr(item, name)
        elif isinstance(item, PlainValidator) and item.func is event_timestamp_of:
            event_time = True
        elif isinstance(item, PlainSerializer):
            continue  # serialisation only
        elif type(item).__name__ == "_PydanticGeneralMetadata" and set(vars(item)) == {"pattern"}:
            meta["pattern"] = _pattern(item.pattern)
        else:
            raise _NoTwin(f"field metadata {item!r}")
    return meta, event_time


def _wire_type(annotation: Any, metadata: list[Any]) -> Any:
    meta, event_time = _constraints(metadata)
    if event_time:
        if meta:
            raise _NoTwin("constraints on an event timestamp")
        return str | int  # replaced by event_timestamp_of's datetime right after decoding
    if annotation in (str, int, float):
        base = annotation
    elif isinstance(annotation, type) and issubclass(annotation, Record):
        base, event_times = _twin(annotation)
        if event_times:
            raise _NoTwin(f"event timestamp nested in {annotation.__name__}")
    elif get_origin(annotation) is list:
        (item,) = get_args(annotation)
        base = GenericAlias(list, (_wire_type(item, []),))  # list[item's twin], built at run time
    else:
        raise _NoTwin(f"type {annotation!r}")
    return Annotated[base, Meta(**meta)] if meta else base


def _field_type(name: str, info: FieldInfo) -> Any:
    if not info.is_required() or info.validation_alias != AliasChoices(name.upper(), name):
        raise _NoTwin(f"field {name}: default or alias")
    return _wire_type(info.annotation, info.metadata)


def _is_event_time(info: FieldInfo) -> bool:
    return any(isinstance(item, PlainValidator) and item.func is event_timestamp_of for item in info.metadata)


@functools.cache
def _twin(model: type[Record]) -> tuple[type[msgspec.Struct], tuple[str, ...]]:
    """The twin Struct of ``model`` and the names of its event-timestamp fields."""
    config = {key: model.model_config.get(key) for key in _EXPECTED_CONFIG}
    decorators = model.__pydantic_decorators__
    if config != _EXPECTED_CONFIG or any(
        (decorators.validators, decorators.field_validators, decorators.model_validators, decorators.root_validators)
    ):
        raise _NoTwin(f"{model.__name__}: config or validators")
    fields = [(name, _field_type(name, info)) for name, info in model.model_fields.items()]
    event_times = tuple(name for name, info in model.model_fields.items() if _is_event_time(info))
    struct = msgspec.defstruct(f"{model.__name__}Wire", fields, rename="upper", frozen=True, gc=False)
    return struct, event_times


def fast_decoder(model: type[Record]) -> Callable[[bytes], Any] | None:
    """The fast decoder of ``model``'s values, or None if no twin can express the model.

    The decoder raises (any exception) for whatever it does not accept; see the module docstring.
    """
    try:
        struct, event_times = _twin(model)
    except _NoTwin:
        return None
    decode = msgspec.json.Decoder(struct).decode

    def decode_fast(raw: bytes) -> Any:
        record = decode(raw)
        for name in event_times:
            force_setattr(record, name, event_timestamp_of(getattr(record, name)))
        return record

    return decode_fast
