"""Incremental decoders for ksqlDB's streamed response bodies.

Bytes arrive in chunks that split lines, JSON values and even UTF-8 characters anywhere. Each
decoder keeps only the unfinished tail between two :meth:`feed` calls -- never the whole
result -- and returns the complete values decoded so far. :meth:`close` is called at the end of
the body and raises :class:`~app.ksqldb.errors.KsqlDBProtocolError` if the body was cut short.

* :class:`LineDecoder` -- ``application/vnd.ksqlapi.delimited.v1``: one JSON value per line.
* :class:`JsonArrayDecoder` -- one JSON array streamed element by element (``/query-stream``
  with ``Accept: application/json``, and the older ``/query``), tolerant of bare ``\\n``
  keep-alives and the ``,\\n`` element endings (trailing comma included) of ksqlDB < 0.24.
"""

from __future__ import annotations

import codecs
import json
from typing import Any

from app.ksqldb.errors import KsqlDBProtocolError

__all__ = ["JsonArrayDecoder", "LineDecoder"]

MAX_PENDING_BYTES = 64 * 1024 * 1024  # one row larger than this is not a row: a broken stream
_WHITESPACE = " \t\r\n"


class LineDecoder:
    """Newline-delimited JSON values; blank lines are skipped."""

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes) -> list[Any]:
        data = self._tail + chunk if self._tail else chunk
        end = data.rfind(b"\n")
        if end < 0:
            self._tail = data
            if len(data) > MAX_PENDING_BYTES:
                raise KsqlDBProtocolError(f"a line longer than {MAX_PENDING_BYTES} bytes")
            return []
        complete, self._tail = data[:end], data[end + 1:]
        if b"\n\n" in complete or complete[:1].isspace() or complete[-1:].isspace() or b"\r" in complete:
            # Keep-alive (blank) lines or CRLF: the slow path drops them.
            lines = [line for line in complete.split(b"\n") if line.strip()]
            if not lines:
                return []
            complete = b"\n".join(lines)
        try:
            # One parse per chunk instead of one per line: the lines become one JSON array.
            return json.loads(b"[" + complete.replace(b"\n", b",") + b"]")
        except ValueError:
            lines = complete.split(b"\n")
            for line in lines:  # find the culprit for the message
                try:
                    json.loads(line)
                except ValueError as exc:
                    raise KsqlDBProtocolError(f"not a JSON line: {line[:200]!r}: {exc}") from None
            raise

    def close(self) -> list[Any]:
        """The last line if the body did not end with a newline."""
        tail, self._tail = self._tail, b""
        if not tail.strip():
            return []
        try:
            return [json.loads(tail)]
        except ValueError:
            raise KsqlDBProtocolError(f"body ends in the middle of a line: {tail[:200]!r}") from None


class JsonArrayDecoder:
    """The elements of one top-level JSON array, as they complete."""

    def __init__(self) -> None:
        self._text = codecs.getincrementaldecoder("utf-8")()
        self._decoder = json.JSONDecoder()
        self._buffer = ""
        self._state = "start"  # start → value ⇄ after → end

    @property
    def ended(self) -> bool:
        """Whether the closing ``]`` was seen."""
        return self._state == "end"

    def feed(self, chunk: bytes) -> list[Any]:
        buffer = self._buffer + self._text.decode(chunk)
        out: list[Any] = []
        pos, size = 0, len(buffer)
        while True:
            while pos < size and buffer[pos] in _WHITESPACE:
                pos += 1
            if pos == size:
                break
            char = buffer[pos]
            if self._state == "start":
                if char != "[":
                    raise KsqlDBProtocolError(f"expected a JSON array, got {buffer[pos:pos + 200]!r}")
                self._state, pos = "value", pos + 1
            elif self._state == "after":
                if char == ",":
                    self._state, pos = "value", pos + 1
                elif char == "]":
                    self._state, pos = "end", pos + 1
                else:
                    raise KsqlDBProtocolError(f"expected ',' or ']' after an element, got {buffer[pos:pos + 200]!r}")
            elif self._state == "value":
                if char == "]":  # an empty array, or ksqlDB < 0.24's trailing ",\n"
                    self._state, pos = "end", pos + 1
                    continue
                try:
                    value, pos = self._decoder.raw_decode(buffer, pos)
                except ValueError:
                    break  # incomplete (or broken: close() or the size limit will say so)
                out.append(value)
                self._state = "after"
            else:
                raise KsqlDBProtocolError(f"data after the end of the array: {buffer[pos:pos + 200]!r}")
        self._buffer = buffer[pos:]
        if len(self._buffer) > MAX_PENDING_BYTES:
            raise KsqlDBProtocolError(f"an element longer than {MAX_PENDING_BYTES} bytes (or not JSON)")
        return out

    def close(self) -> list[Any]:
        """Raise unless the array was complete."""
        rest = self._buffer + self._text.decode(b"", final=True)
        if self._state != "end":
            raise KsqlDBProtocolError(f"body ended before the JSON array was closed: {rest[:200]!r}")
        if rest.strip():
            raise KsqlDBProtocolError(f"data after the end of the array: {rest[:200]!r}")
        return []
