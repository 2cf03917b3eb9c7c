"""ksqlDB SQL types → Arrow types, and ksqlDB's JSON values → Arrow arrays.

ksqlDB describes columns with type strings: ``/query-stream`` metadata has ``columnTypes``
(``"BIGINT"``, ``"DECIMAL(10, 2)"``, ``"ARRAY<STRING>"``, ``"MAP<STRING, INTEGER>"``,
``"STRUCT<`ID` STRING, `TAGS` ARRAY<STRING>>"``) and the older ``/query`` header has a schema
string (``"`A` STRING KEY, `B` DOUBLE"``, key columns marked ``KEY``).

Mapping (nullable everywhere: ksqlDB columns are nullable):

========================  ===================================
ksqlDB                    Arrow
========================  ===================================
STRING / VARCHAR          string
BIGINT                    int64
INTEGER / INT             int32
DOUBLE                    float64
DECIMAL(p, s)             decimal128(p, s)  (JSON number → exact decimal via its text)
BOOLEAN                   bool
TIMESTAMP                 timestamp[ms, UTC] (ksqlDB sends ``2026-11-24T10:15:30.123``, UTC)
DATE / TIME               date32 / time32[ms]
BYTES                     binary (ksqlDB sends base64)
ARRAY<T> / MAP<K, V>      list<T> / map<K, V>
STRUCT<…>                 struct<…>
========================  ===================================
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import pyarrow as pa

from app.ksqldb.errors import KsqlDBProtocolError

__all__ = ["Column", "parse_schema", "parse_type", "to_arrow_array"]

_TOKEN = re.compile(r"\s*(`(?:[^`]|``)*`|[A-Za-z_][A-Za-z0-9_]*|\d+|[<>(),])")
_SIMPLE: dict[str, pa.DataType] = {
    "STRING": pa.string(),
    "VARCHAR": pa.string(),
    "BIGINT": pa.int64(),
    "INTEGER": pa.int32(),
    "INT": pa.int32(),
    "DOUBLE": pa.float64(),
    "BOOLEAN": pa.bool_(),
    "TIMESTAMP": pa.timestamp("ms", tz="UTC"),
    "DATE": pa.date32(),
    "TIME": pa.time32("ms"),
    "BYTES": pa.binary(),
}


@dataclass(frozen=True, slots=True)
class Column:
    """A result column: its name, ksqlDB type text, Arrow type, and whether it is a key column."""

    name: str
    type_text: str
    arrow: pa.DataType
    key: bool = False


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise KsqlDBProtocolError(f"cannot parse ksqlDB type {text!r} at {pos}")
        out.append(match.group(1))
        pos = match.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


def _identifier(token: str) -> str:
    return token[1:-1].replace("``", "`") if token.startswith("`") else token


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token.upper() != expected):
            raise KsqlDBProtocolError(f"ksqlDB type {self.text!r}: expected {expected or 'more'}, got {token!r}")
        self.pos += 1
        return token

    def type(self) -> pa.DataType:
        word = self.take().upper()
        if word in _SIMPLE:
            return _SIMPLE[word]
        if word == "DECIMAL":
            self.take("(")
            precision = int(self.take())
            self.take(",")
            scale = int(self.take())
            self.take(")")
            return pa.decimal128(precision, scale)
        if word == "ARRAY":
            self.take("<")
            item = self.type()
            self.take(">")
            return pa.list_(item)
        if word == "MAP":
            self.take("<")
            key = self.type()
            self.take(",")
            value = self.type()
            self.take(">")
            return pa.map_(key, value)
        if word == "STRUCT":
            self.take("<")
            fields = []
            while self.peek() != ">":
                name = _identifier(self.take())
                fields.append(pa.field(name, self.type()))
                if self.peek() == ",":
                    self.take(",")
            self.take(">")
            return pa.struct(fields)
        raise KsqlDBProtocolError(f"unsupported ksqlDB type {word!r} in {self.text!r}")


def parse_type(text: str) -> pa.DataType:
    """The Arrow type of a ksqlDB type string. Raises KsqlDBProtocolError if it is not one."""
    parser = _Parser(text)
    result = parser.type()
    if parser.peek() is not None:
        raise KsqlDBProtocolError(f"trailing text in ksqlDB type {text!r}")
    return result


def parse_schema(text: str) -> list[Column]:
    """The columns of a ``/query`` header schema: ``"`A` STRING KEY, `B` DOUBLE"``."""
    parser = _Parser(text)
    columns = []
    while parser.peek() is not None:
        name = _identifier(parser.take())
        start = parser.pos
        kind = parser.type()
        type_text = " ".join(parser.tokens[start:parser.pos])
        key = False
        if parser.peek() is not None and parser.peek().upper() == "PRIMARY":
            parser.take()
        if parser.peek() is not None and parser.peek().upper() == "KEY":
            parser.take()
            key = True
        columns.append(Column(name, type_text, kind, key))
        if parser.peek() == ",":
            parser.take(",")
    return columns


# -- values --------------------------------------------------------------------------------

Converter = Callable[[Any], Any]


def _timestamp(value: Any) -> Any:
    if isinstance(value, int):
        return value  # epoch milliseconds
    moment = datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _converter(kind: pa.DataType) -> Converter | None:
    """A Python-side fix-up of one JSON value for ``kind``; None when pyarrow takes it as is."""
    if pa.types.is_decimal(kind):
        return lambda v: v if v is None else Decimal(repr(v) if isinstance(v, float) else str(v))
    if pa.types.is_timestamp(kind):
        return lambda v: v if v is None else _timestamp(v)
    if pa.types.is_date(kind):
        return lambda v: v if v is None or isinstance(v, int) else date.fromisoformat(v)
    if pa.types.is_time(kind):
        return lambda v: v if v is None or isinstance(v, int) else time.fromisoformat(v)
    if pa.types.is_binary(kind):
        return lambda v: v if v is None else base64.b64decode(v)
    if pa.types.is_map(kind):
        key, item = _converter(kind.key_type), _converter(kind.item_type)
        if key is None and item is None:
            return None
        key, item = key or (lambda v: v), item or (lambda v: v)
        return lambda v: v if v is None else [(key(k), item(x)) for k, x in v.items()]
    if pa.types.is_list(kind):
        item = _converter(kind.value_type)
        return None if item is None else (lambda v: v if v is None else [item(x) for x in v])
    if pa.types.is_struct(kind):
        fields = {kind.field(i).name: _converter(kind.field(i).type) for i in range(kind.num_fields)}
        fixes = {name: fix for name, fix in fields.items() if fix is not None}
        if not fixes:
            return None
        return lambda v: v if v is None else {k: (fixes[k](x) if k in fixes else x) for k, x in v.items()}
    return None


_NAIVE_MS = pa.timestamp("ms")


def to_arrow_array(values: Sequence[Any], kind: pa.DataType) -> pa.Array:
    """One column of JSON values as an Arrow array of ``kind``.

    Top-level TIMESTAMP and DATE columns of ISO strings are parsed by Arrow's own cast (fast);
    DECIMAL and nested temporal values go through Python once per value.
    """
    if pa.types.is_timestamp(kind) and values and all(v is None or isinstance(v, str) for v in values[:64]):
        try:
            return pa.array(values, pa.string()).cast(_NAIVE_MS).cast(kind)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass  # offsets or other spellings: the Python path below
    if pa.types.is_date(kind) and values and all(v is None or isinstance(v, str) for v in values[:64]):
        try:
            return pa.array(values, pa.string()).cast(kind)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
    fix = _converter(kind)
    if fix is not None:
        values = [fix(v) for v in values]
    return pa.array(values if isinstance(values, list | tuple) else list(values), type=kind)
