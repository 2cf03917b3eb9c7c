"""An async ksqlDB REST client (httpx) that streams query results without holding them.

* :meth:`KsqlDBClient.query` runs a pull or push query on ``/query-stream`` (HTTP/2 when the
  server offers it over TLS and ``h2`` is installed, else HTTP/1.1 chunked), falling back to the
  older ``/query`` endpoint when the server has no ``/query-stream`` (ksqlDB < 0.24 answers 404).
  Rows are decoded chunk by chunk as they arrive (:mod:`app.ksqldb.framing`).
* :meth:`KsqlDBClient.statement` runs ``SHOW``/``DESCRIBE``/DDL on ``/ksql``.
* :meth:`KsqlDBClient.close_query` ends a push query (``/close-query``).

Failures: a request that fails *before* its first row (connection refused or reset, timeout,
5xx) is retried with exponential backoff (``ksqldb.retries``), then raises
:class:`~app.ksqldb.errors.KsqlDBUnavailable`. Once rows flow nothing is retried: a dropped
connection, a truncated body, an ``errorMessage`` row or a stall raise
:class:`~app.ksqldb.errors.KsqlDBStreamError` (or :class:`KsqlDBStalled`). ksqlDB's error
bodies become typed errors carrying ``error_code`` and ``message``.

Stalls: ``read_timeout_s`` bounds total silence; ``stall_timeout_s`` bounds the time without a
row while the server still sends keep-alive newlines (pass ``stall_timeout_s=None`` to
:meth:`~KsqlDBClient.query` for a push query that may legitimately wait).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable
from importlib.util import find_spec
from types import TracebackType
from typing import Any, Literal

import httpx
import pyarrow as pa

from app.core.retry import Backoff
from app.core.settings import KsqlDBSettings
from app.ksqldb.errors import (
    KsqlDBError,
    KsqlDBNotFound,
    KsqlDBProtocolError,
    KsqlDBStalled,
    KsqlDBStreamError,
    KsqlDBUnavailable,
    error_from_body,
)
from app.ksqldb.framing import JsonArrayDecoder, LineDecoder
from app.ksqldb.types import Column, parse_schema, parse_type, to_arrow_array

__all__ = ["DELIMITED", "KsqlDBClient", "Query", "rows_to_batch"]

logger = logging.getLogger(__name__)

DELIMITED = "application/vnd.ksqlapi.delimited.v1"
_KSQL_JSON = "application/vnd.ksql.v1+json"
_Mode = Literal["delimited", "json", "legacy"]


def _tls_verify(settings: KsqlDBSettings) -> ssl.SSLContext | bool:
    if settings.ca_file is not None:
        return ssl.create_default_context(cafile=str(settings.ca_file))
    return settings.verify


def _body_of(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


class KsqlDBClient:
    """One connection pool to one ksqlDB server; use as ``async with KsqlDBClient(settings) as c``."""

    def __init__(self, settings: KsqlDBSettings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        auth = None
        if settings.username:
            password = settings.password.get_secret_value() if settings.password else ""
            auth = httpx.BasicAuth(settings.username, password)
        self._http = httpx.AsyncClient(
            base_url=settings.url,
            auth=auth,
            verify=_tls_verify(settings),
            http2=settings.http2 and find_spec("h2") is not None,
            transport=transport,
            timeout=httpx.Timeout(
                connect=settings.connect_timeout_s, read=settings.read_timeout_s,
                write=settings.read_timeout_s, pool=settings.connect_timeout_s,
            ),
        )
        self._backoff = Backoff(settings.retry_backoff_s, max(settings.retry_backoff_s, 10.0))
        self.legacy: bool | None = None  # None: not known yet; True: the server has no /query-stream

    async def __aenter__(self) -> KsqlDBClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- statements --------------------------------------------------------------------------

    async def statement(self, ksql: str, properties: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a statement on ``/ksql`` and return its entities (``SHOW STREAMS;`` → ``[{"@type": "streams", …}]``)."""
        body = {"ksql": ksql, "streamsProperties": properties or {}}
        response = await self.send("/ksql", body, accept=_KSQL_JSON, stream=False)
        entities = _body_of(response.content)
        if not isinstance(entities, list):
            raise KsqlDBProtocolError(f"/ksql answered {str(entities)[:200]!r}, not a list of entities")
        return entities

    async def sources(self, kind: Literal["streams", "tables"]) -> list[dict[str, Any]]:
        """``SHOW STREAMS;`` / ``SHOW TABLES;``: one dict per source (name, topic, formats…)."""
        entities = await self.statement(f"SHOW {kind.upper()};")
        return [source for entity in entities for source in entity.get(kind, [])]

    async def describe(self, source: str) -> dict[str, Any]:
        """``DESCRIBE <source>;``: the ``sourceDescription`` (name, type, fields, topic, partitions…)."""
        entities = await self.statement(f"DESCRIBE {source};")
        for entity in entities:
            if "sourceDescription" in entity:
                return entity["sourceDescription"]
        raise KsqlDBProtocolError(f"DESCRIBE {source} returned no sourceDescription")

    async def close_query(self, query_id: str) -> None:
        """End a push query (``/close-query``)."""
        await self.send("/close-query", {"queryId": query_id}, accept="application/json", stream=False)

    # -- queries -----------------------------------------------------------------------------

    def query(
        self,
        sql: str,
        properties: dict[str, Any] | None = None,
        *,
        accept: Literal["delimited", "json"] = "delimited",
        stall_timeout_s: float | None | Literal["default"] = "default",
        on_progress: Callable[[Query], None] | None = None,
    ) -> Query:
        """A query to use as ``async with client.query(sql) as q: async for rows in q.batches(): …``.

        ``on_progress(query)`` is called after every chunk that brought rows (counters updated).
        """
        stall = self.settings.stall_timeout_s if stall_timeout_s == "default" else stall_timeout_s
        return Query(self, sql, properties or {}, accept, stall, on_progress)

    async def send(self, path: str, body: dict[str, Any], *, accept: str, stream: bool) -> httpx.Response:
        """POST ``body`` to ``path`` with retries; the 200 response (streaming if ``stream``).

        Retries connection errors, timeouts and 5xx; raises the typed error of any other status.
        """
        headers = {"Accept": accept, "Content-Type": _KSQL_JSON if path in ("/ksql", "/query") else "application/json"}
        last: KsqlDBError | None = None
        for attempt in range(self.settings.retries + 1):
            if attempt:
                await asyncio.sleep(self._backoff.delay(attempt - 1))
            request = self._http.build_request("POST", path, content=json.dumps(body).encode(), headers=headers)
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                last = KsqlDBUnavailable(f"POST {path}: {exc!r}")
                logger.warning("ksqlDB %s failed (attempt %d): %r", path, attempt + 1, exc)
                continue
            if response.status_code == 200:
                return response
            raw = await response.aread()
            await response.aclose()
            error = error_from_body(_body_of(raw), response.status_code)
            if not isinstance(error, KsqlDBUnavailable):
                raise error
            last = error
            logger.warning("ksqlDB %s answered %d (attempt %d): %s", path, response.status_code, attempt + 1, error)
        assert last is not None
        raise last


class Query:
    """A running query: :attr:`columns` once entered, then rows as they arrive.

    Counters (``rows``, ``tombstones``, ``bytes``) grow as the body is read; ``complete`` turns
    True when the server ended the result (pull query done, push query LIMIT reached).
    """

    def __init__(self, client: KsqlDBClient, sql: str, properties: dict[str, Any], accept: str,
                 stall_timeout_s: float | None, on_progress: Callable[[Query], None] | None = None) -> None:
        self.client = client
        self.on_progress = on_progress
        self.sql = sql
        self.properties = properties
        self.accept = accept
        self.stall_timeout_s = stall_timeout_s
        self.query_id: str | None = None
        self.columns: list[Column] = []
        self.rows = 0
        self.tombstones = 0
        self.bytes = 0
        self.complete = False
        self.http_version = ""
        self.final_message: str | None = None
        self._mode: _Mode = "delimited"
        self._response: httpx.Response | None = None
        self._chunks: AsyncIterator[bytes] | None = None
        self._decoder: LineDecoder | JsonArrayDecoder = LineDecoder()
        self._pending: list[list[Any]] = []

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([pa.field(column.name, column.arrow) for column in self.columns])

    async def __aenter__(self) -> Query:
        client = self.client
        for attempt in range(client.settings.retries + 1):
            if attempt:
                await asyncio.sleep(client._backoff.delay(attempt - 1))  # noqa: SLF001 - a part of its client
            await self._open()
            try:
                await self._read_header()
                return self
            except (httpx.TransportError, KsqlDBProtocolError) as exc:
                # Nothing consumed yet: the whole request can be sent again.
                await self._release()
                if attempt == client.settings.retries:
                    raise KsqlDBUnavailable(f"query failed before its header: {exc!r}") from exc
        raise AssertionError("unreachable")

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._release()
        if not self.complete and self.query_id and self._mode != "legacy":
            # A push query (or an abandoned pull query) keeps running on the server until closed;
            # the old /query endpoint ends it with the connection.
            try:
                await self.client.close_query(self.query_id)
            except KsqlDBError as error:
                logger.warning("ksqlDB: could not close query %s: %s", self.query_id, error)

    async def _release(self) -> None:
        if self._response is not None:
            await self._response.aclose()
            self._response = None

    async def _open(self) -> None:
        client = self.client
        if client.legacy is not True:
            accept = DELIMITED if self.accept == "delimited" else "application/json"
            body = {"sql": self.sql, "properties": self.properties, "sessionVariables": {}}
            try:
                self._start(await client.send("/query-stream", body, accept=accept, stream=True),
                            "delimited" if self.accept == "delimited" else "json")
                client.legacy = False
                return
            except KsqlDBNotFound:
                if client.legacy is False:
                    raise
                logger.info("ksqlDB has no /query-stream (older than 0.24): using /query")
                client.legacy = True
        properties = {f"ksql.streams.{k}" if k == "auto.offset.reset" else k: v for k, v in self.properties.items()}
        body = {"ksql": self.sql, "streamsProperties": properties}
        self._start(await client.send("/query", body, accept=_KSQL_JSON, stream=True), "legacy")

    def _start(self, response: httpx.Response, mode: _Mode) -> None:
        self._response, self._mode = response, mode
        self.http_version = response.http_version
        self._chunks = response.aiter_bytes()
        self._decoder = LineDecoder() if mode == "delimited" else JsonArrayDecoder()
        self._pending = []

    async def _read_header(self) -> None:
        while not self.columns:
            chunk = await self._next_chunk()
            if chunk is None:
                raise KsqlDBProtocolError("body ended before the query's header")
            self._pending.extend(self._interpret(self._decoder.feed(chunk)))

    async def _next_chunk(self) -> bytes | None:
        assert self._chunks is not None
        try:
            chunk = await anext(self._chunks)
        except StopAsyncIteration:
            return None
        self.bytes += len(chunk)
        return chunk

    def _interpret(self, values: list[Any]) -> list[list[Any]]:
        """Rows among decoded values; the header and control messages update the state."""
        if self._mode == "legacy":
            return self._legacy_rows(values)
        rows = [value for value in values if type(value) is list]
        if len(rows) == len(values) and self.columns:
            return rows
        rows = []
        for value in values:
            if type(value) is list:
                if not self.columns:
                    raise KsqlDBProtocolError("a row before the query's metadata")
                rows.append(value)
            elif isinstance(value, dict) and ("error_code" in value or "@type" in value):
                raise error_from_body(value, 200, mid_stream=True)
            elif isinstance(value, dict) and "columnNames" in value and not self.columns:
                self.query_id = value.get("queryId")
                self.columns = [Column(name, text, parse_type(text))
                                for name, text in zip(value["columnNames"], value["columnTypes"], strict=True)]
            else:
                raise KsqlDBProtocolError(f"unexpected element {str(value)[:200]!r}")
        return rows

    def _legacy_rows(self, values: list[Any]) -> list[list[Any]]:
        rows = []
        for value in values:
            row = value.get("row") if isinstance(value, dict) else None
            if row is not None:
                if row.get("tombstone"):
                    self.tombstones += 1  # a deleted key (table changelog): no row to export
                else:
                    rows.append(row["columns"])
            elif isinstance(value, dict) and "header" in value:
                self.query_id = value["header"].get("queryId")
                self.columns = parse_schema(value["header"]["schema"])
            elif isinstance(value, dict) and "errorMessage" in value:
                raise error_from_body(value["errorMessage"], 200, mid_stream=True)
            elif isinstance(value, dict) and "finalMessage" in value:
                self.final_message = value["finalMessage"]
            else:
                raise KsqlDBProtocolError(f"unexpected /query element {str(value)[:200]!r}")
        return rows

    async def batches(self) -> AsyncIterator[list[list[Any]]]:
        """Lists of rows (each a list of JSON values in column order), one per chunk with rows."""
        if self._pending:
            rows, self._pending = self._pending, []
            self._counted(rows)
            yield rows
        last_row = time.monotonic()
        while True:
            try:
                chunk = await self._next_chunk()
            except httpx.ReadTimeout as exc:
                raise KsqlDBStalled(f"no data for {self.client.settings.read_timeout_s}s after {self.rows} rows") from exc
            except httpx.TransportError as exc:
                raise KsqlDBStreamError(f"connection lost after {self.rows} rows: {exc!r}") from exc
            if chunk is None:
                break
            rows = self._interpret(self._decoder.feed(chunk))
            now = time.monotonic()
            if rows:
                last_row = now
                self._counted(rows)
                yield rows
            elif self.stall_timeout_s is not None and now - last_row > self.stall_timeout_s:
                raise KsqlDBStalled(f"no row for {self.stall_timeout_s}s (keep-alives only) after {self.rows} rows")
        rows = self._interpret(self._decoder.close())
        if rows:
            self._counted(rows)
            yield rows
        self.complete = True

    def _counted(self, rows: list[list[Any]]) -> None:
        self.rows += len(rows)
        if self.on_progress is not None:
            self.on_progress(self)

    async def record_batches(self, max_rows: int = 65_536) -> AsyncIterator[pa.RecordBatch]:
        """The rows as Arrow record batches of at most ``max_rows`` rows, typed by the columns."""
        schema = self.schema
        buffered: list[list[Any]] = []
        async for rows in self.batches():
            buffered += rows
            if len(buffered) >= max_rows:
                for start in range(0, len(buffered) - max_rows + 1, max_rows):
                    yield rows_to_batch(buffered[start:start + max_rows], schema)
                buffered = buffered[start + max_rows:]
        if buffered:
            yield rows_to_batch(buffered, schema)


def rows_to_batch(rows: list[list[Any]], schema: pa.Schema) -> pa.RecordBatch:
    """Rows (lists in column order) as one Arrow record batch of ``schema``."""
    if not rows:
        return pa.RecordBatch.from_pylist([], schema=schema)
    try:
        columns = list(zip(*rows, strict=True))
    except ValueError:
        widths = sorted({len(row) for row in rows})
        raise KsqlDBProtocolError(f"rows of {widths} values for {len(schema)} columns") from None
    if len(columns) != len(schema):
        raise KsqlDBProtocolError(f"rows of {len(columns)} values for {len(schema)} columns")
    arrays = [to_arrow_array(values, field.type) for values, field in zip(columns, schema, strict=True)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
