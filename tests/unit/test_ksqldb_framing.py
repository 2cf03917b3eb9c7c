"""The ksqlDB response decoders and type mapping, fed bytes split at every possible point."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal

import pyarrow as pa
import pytest

from app.ksqldb.client import rows_to_batch
from app.ksqldb.errors import KsqlDBProtocolError
from app.ksqldb.framing import JsonArrayDecoder, LineDecoder
from app.ksqldb.types import parse_schema, parse_type

META = {"queryId": "q1", "columnNames": ["NAME", "N"], "columnTypes": ["STRING", "BIGINT"]}
ROWS = [["Zoë 😀", 1], ["Jürgen", 2], ["名前", None]]


def _feed_split(decoder: LineDecoder | JsonArrayDecoder, body: bytes, size: int) -> list[object]:
    out: list[object] = []
    for start in range(0, len(body), size):
        out.extend(decoder.feed(body[start:start + size]))
    out.extend(decoder.close())
    return out


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64, 10_000])
def test_delimited_lines_survive_any_split_even_inside_utf8(size: int) -> None:
    body = b"\n".join(json.dumps(v, ensure_ascii=False).encode() for v in [META, *ROWS]) + b"\n"
    assert _feed_split(LineDecoder(), body, size) == [META, *ROWS]


def test_delimited_last_line_without_newline_is_kept_but_a_cut_line_is_an_error() -> None:
    assert _feed_split(LineDecoder(), b'[1]\n[2]', 3) == [[1], [2]]
    decoder = LineDecoder()
    decoder.feed(b'[1]\n["cut')
    with pytest.raises(KsqlDBProtocolError, match="middle of a line"):
        decoder.close()


@pytest.mark.parametrize("size", [1, 2, 4, 9, 10_000])
@pytest.mark.parametrize("style", ["modern", "pre-0.24"])
def test_json_array_elements_with_keepalives_and_trailing_commas(size: int, style: str) -> None:
    elements = [{"header": {"queryId": "q", "schema": "`A` STRING KEY"}}, {"row": {"columns": ["é"]}},
                {"row": {"columns": ["x"], "tombstone": True}}, {"finalMessage": "Limit Reached"}]
    encoded = [json.dumps(e, ensure_ascii=False).encode() for e in elements]
    if style == "modern":
        body = b"[" + b",\n".join(encoded) + b"]"
    else:  # every object ends with ",\n", keep-alive newlines in between
        body = b"[" + b"\n\n".join(e + b",\n" for e in encoded) + b"\n]"
    assert _feed_split(JsonArrayDecoder(), body, size) == elements


def test_json_array_cut_short_is_an_error() -> None:
    decoder = JsonArrayDecoder()
    assert decoder.feed(b'[{"row":{"columns":[1]}},{"row":') == [{"row": {"columns": [1]}}]
    with pytest.raises(KsqlDBProtocolError, match="before the JSON array was closed"):
        decoder.close()


def test_json_array_garbage_is_an_error() -> None:
    with pytest.raises(KsqlDBProtocolError, match="expected a JSON array"):
        JsonArrayDecoder().feed(b"<html>")
    with pytest.raises(KsqlDBProtocolError, match="expected ',' or ']'"):
        JsonArrayDecoder().feed(b"[1 2]")


def test_types_parse_nested_and_quoted() -> None:
    assert parse_type("DECIMAL(10, 2)") == pa.decimal128(10, 2)
    assert parse_type("ARRAY<STRING>") == pa.list_(pa.string())
    assert parse_type("MAP<STRING, INTEGER>") == pa.map_(pa.string(), pa.int32())
    assert parse_type("STRUCT<`ID` STRING, `Tags ``x```  ARRAY<BIGINT>>") == pa.struct(
        [pa.field("ID", pa.string()), pa.field("Tags `x`", pa.list_(pa.int64()))]
    )
    with pytest.raises(KsqlDBProtocolError):
        parse_type("GEOMETRY")
    columns = parse_schema("`USER_ID` STRING KEY, `TYPE` STRING KEY, `TOTAL` DECIMAL(12, 2), `T` TIMESTAMP")
    assert [(c.name, c.key) for c in columns] == [("USER_ID", True), ("TYPE", True), ("TOTAL", False), ("T", False)]
    assert columns[2].arrow == pa.decimal128(12, 2) and columns[3].arrow == pa.timestamp("ms", tz="UTC")


def test_rows_of_every_type_become_one_typed_record_batch() -> None:
    types = ["STRING", "BIGINT", "INTEGER", "DOUBLE", "DECIMAL(12, 2)", "BOOLEAN", "TIMESTAMP", "DATE",
             "ARRAY<STRING>", "MAP<STRING, DOUBLE>", "STRUCT<`ID` STRING, `AT` TIMESTAMP, `PRICE` DECIMAL(6, 2)>"]
    schema = pa.schema([pa.field(f"C{i}", parse_type(t)) for i, t in enumerate(types)])
    rows = [
        ["a", 2**40, 7, 1.5, 1234.56, True, "2026-11-24T10:15:30.123", "2026-11-24", ["x", "y"], {"k": 0.5},
         {"ID": "P1", "AT": "2026-11-24T00:00:00.000", "PRICE": 9.99}],
        [None] * len(types),
    ]
    batch = rows_to_batch(rows, schema)
    assert batch.schema == schema
    first = batch.to_pylist()[0]
    assert first["C4"] == Decimal("1234.56")
    assert first["C6"] == datetime(2026, 11, 24, 10, 15, 30, 123000, tzinfo=UTC)
    assert first["C7"] == date(2026, 11, 24)
    assert first["C9"] == [("k", 0.5)]
    assert first["C10"] == {"ID": "P1", "AT": datetime(2026, 11, 24, tzinfo=UTC), "PRICE": Decimal("9.99")}
    assert all(value is None for value in batch.to_pylist()[1].values())
    with pytest.raises(KsqlDBProtocolError, match="2 values for 11 columns"):
        rows_to_batch([[1, 2]], schema)


@pytest.mark.parametrize("size", [1, 4, 16, 10_000])
def test_delimited_keepalive_newlines_anywhere(size: int) -> None:
    body = b"\n" + json.dumps(META).encode() + b"\n\n\n[1]\r\n[2]\n\n"
    assert _feed_split(LineDecoder(), body, size) == [META, [1], [2]]


def test_no_rows_make_an_empty_batch_of_the_schema() -> None:
    schema = pa.schema([pa.field("A", pa.int64()), pa.field("T", parse_type("TIMESTAMP"))])
    batch = rows_to_batch([], schema)
    assert batch.num_rows == 0 and batch.schema == schema
