"""A test ksqlDB server: the documented REST wire format (shared notes: ksqldb-rest.md), over real sockets.

ksqlDB cannot run here, so this is the one stand-in the tests use. It follows the notes:

* ``POST /query-stream`` -- ``{"sql", "properties", "sessionVariables"}``; ``Accept:
  application/vnd.ksqlapi.delimited.v1`` (default): a metadata line then one JSON array per
  row; ``Accept: application/json``: one JSON array ``[{meta}, [row], …]``. No tombstones.
* ``POST /query`` -- ``{"ksql", "streamsProperties"}``: ``[{"header": {"queryId", "schema"}},``
  then ``{"row": {"columns": […]}}`` elements (``"tombstone": true`` on deleted keys), a push
  query with LIMIT ends with ``{"finalMessage": "Limit Reached"}]``, a pull query with ``}}]``.
  In pre-0.24 mode every object ends with ``,\\n``, bare ``\\n`` keep-alives are sent, and
  ``/query-stream`` does not exist (404), so clients fall back to ``/query``.
* ``POST /ksql`` -- ``SHOW STREAMS;``, ``SHOW TABLES;``, ``DESCRIBE <source>;`` entities; a SELECT
  there is error 40002.
* ``POST /close-query`` -- ends a running push query.
* Errors: ``{"@type": "generic_error"|"statement_error", "error_code": N, "message": …}``.

Queries it understands (what txlake sends, plus what the tests need)::

    SELECT * | col, … [, ROWPARTITION, ROWOFFSET] FROM <source>
        [WHERE ROWTIME >= n AND ROWTIME < m …] [EMIT CHANGES] [LIMIT n];

``ROWPARTITION``/``ROWOFFSET`` exist from ksqlDB 0.24: in pre-0.24 mode they are unknown
columns (error 40001), as on a real old server. A push query starts at the earliest row when
``auto.offset.reset`` is ``earliest`` (else it waits for new rows, which never come) and runs
until ``/close-query``, its LIMIT, or the client disconnects.

Knobs (:class:`Knobs`, changeable between requests): chunk size (responses split mid-line),
keep-alives, per-row delay (slow streams), a stall after N rows (keep-alives only, or silence),
a mid-stream error or a dropped connection after N rows, tombstones on ``/query``, 5xx answers
for the next requests, basic auth.

Datasets come from the project's load generator (:func:`tools.loadgen.generate`): the four
streams as ksqlDB would hold them (UPPER-CASE columns, STRUCT/ARRAY values) with Kafka
coordinates, and the four tables aggregated from them. :func:`bench_table` is a lazily
generated table of any size for the benchmark.

Run standalone: ``python -m tests.ksqldb_server --port 8088 --count 5000``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import re
import uuid
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from models.derive import Blacklist, anonymize, blacklisted, flatten
from tools.loadgen import generate

__all__ = ["Dataset", "Knobs", "KsqlDBTestServer", "bench_table", "loadgen_datasets"]

DELIMITED = "application/vnd.ksqlapi.delimited.v1"
KSQL_JSON = "application/vnd.ksql.v1+json"

Row = tuple[int, int, int, list[Any]]  # (ROWTIME ms, ROWPARTITION, ROWOFFSET, column values)


@dataclass
class Dataset:
    """A ksqlDB stream or table: its columns (name, type, key?) and a way to list its rows."""

    name: str
    kind: str  # "STREAM" | "TABLE"
    topic: str
    columns: list[tuple[str, str, bool]]
    rows: Callable[[], Iterator[Row]]
    partitions: int = 4
    fast_line: Callable[[int], bytes] | None = None  # row i as JSON bytes, no newline (benchmark tables)
    count: int = 0


@dataclass
class Knobs:
    """Misbehaviour on demand. Row counts are rows sent in the current response."""

    chunk_bytes: int = 65_536  # split every response body into pieces of this size (mid-line)
    keepalive_every: int = 0  # send a bare "\n" after every N rows (pre-0.24 /query, and delimited)
    row_delay_s: float = 0.0  # sleep between rows
    stall_after: int | None = None  # stop sending rows after N
    stall_keepalive_s: float | None = None  # while stalled, send "\n" this often (None: silence)
    error_after: int | None = None  # send an errorMessage after N rows and end
    drop_after: int | None = None  # close the connection without ending the body after N rows
    tombstones_every: int = 0  # on /query, a tombstone after every N rows
    fail_next: list[int] = field(default_factory=list)  # HTTP statuses for the next requests (e.g. [503])
    legacy: bool = False  # pre-0.24: no /query-stream, ",\n" after every object, keep-alives
    auth: tuple[str, str] | None = None  # required basic-auth credentials


def _error(status: int, code: int, message: str, statement: str | None = None) -> web.Response:
    body: dict[str, Any] = {"@type": "statement_error" if statement else "generic_error",
                            "error_code": code, "message": message}
    if statement is not None:
        body.update(statementText=statement, entities=[])
    return web.json_response(body, status=status, content_type="application/json")


class _BadStatement(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


_SELECT = re.compile(
    r"^\s*SELECT\s+(?P<cols>.+?)\s+FROM\s+(?P<src>[A-Za-z_][A-Za-z0-9_]*)"
    r"(?:\s+WHERE\s+(?P<where>.+?))?(?P<emit>\s+EMIT\s+CHANGES)?(?:\s+LIMIT\s+(?P<limit>\d+))?\s*;\s*$",
    re.IGNORECASE | re.DOTALL,
)
_ROWTIME = re.compile(r"^\s*ROWTIME\s*(>=|<=|>|<|=)\s*(\d+)\s*$", re.IGNORECASE)
_OPS: dict[str, Callable[[int, int], bool]] = {
    ">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
    "<": lambda a, b: a < b, "=": lambda a, b: a == b,
}


@dataclass
class _Plan:
    source: Dataset
    picks: list[int | str]  # column index, or "ROWPARTITION"/"ROWOFFSET"
    names: list[str]
    types: list[str]
    keys: list[bool]
    push: bool
    limit: int | None
    where: list[tuple[Callable[[int, int], bool], int]]


class KsqlDBTestServer:
    """An aiohttp app serving :class:`Dataset` objects the way ksqlDB's REST API does."""

    def __init__(self, datasets: dict[str, Dataset], knobs: Knobs | None = None) -> None:
        self.datasets = {name.upper(): dataset for name, dataset in datasets.items()}
        self.knobs = knobs or Knobs()
        self.running: dict[str, asyncio.Event] = {}  # push queries: id → closed
        self.requests: list[tuple[str, str]] = []  # (path, HTTP version) of every request
        self.closed_queries: list[str] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_post("/query-stream", self._query_stream)
        app.router.add_post("/query", self._query)
        app.router.add_post("/ksql", self._ksql)
        app.router.add_post("/close-query", self._close_query)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app(), handle_signals=False, shutdown_timeout=2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sockets = site._server.sockets  # type: ignore[union-attr]
        self.url = f"http://{host}:{sockets[0].getsockname()[1]}"
        return self.url

    async def stop(self) -> None:
        for closed in self.running.values():
            closed.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def asgi(self) -> Callable[..., Any]:
        """``/query-stream`` (delimited) as an ASGI app, for an HTTP/2-capable server (hypercorn, TLS + ALPN).

        ksqlDB ≥ 0.24 serves ``/query-stream`` over HTTP/2; aiohttp speaks only HTTP/1.1. The
        datasets, query planning and framing are the ones above; the misbehaviour knobs are not.
        """

        async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
            if scope["type"] == "lifespan":
                while (message := await receive())["type"] != "lifespan.shutdown":
                    await send({"type": "lifespan.startup.complete"})
                await send({"type": "lifespan.shutdown.complete"})
                return
            raw = b""
            while True:
                message = await receive()
                raw += message.get("body", b"")
                if not message.get("more_body"):
                    break
            self.requests.append((scope["path"], f"HTTP/{scope['http_version']}"))
            try:
                if scope["path"] != "/query-stream" or scope["method"] != "POST":
                    raise _BadStatement(40400, "HTTP 404 Not Found")
                plan = self._plan(str(json.loads(raw).get("sql", "")))
            except _BadStatement as bad:
                status = bad.code // 100
                body = json.dumps({"@type": "generic_error", "error_code": bad.code, "message": bad.message}).encode()
                await send({"type": "http.response.start", "status": status,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": body})
                return
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", DELIMITED.encode())]})
            meta = {"queryId": f"transient_{plan.source.name}_{uuid.uuid4().int % 10**18}",
                    "columnNames": plan.names, "columnTypes": plan.types}
            lines = [json.dumps(meta).encode()]
            for row in self._selected(plan, earliest=True):
                lines.append(json.dumps(row).encode())
                if len(lines) >= 100:
                    await send({"type": "http.response.body", "body": b"\n".join(lines) + b"\n", "more_body": True})
                    lines = []
            await send({"type": "http.response.body", "body": b"\n".join(lines) + b"\n" if lines else b""})

        return app

    # -- request plumbing --------------------------------------------------------------------

    def _gate(self, request: web.Request) -> web.Response | None:
        self.requests.append((request.path, f"HTTP/{request.version.major}.{request.version.minor}"))
        if self.knobs.auth is not None:
            expected = "Basic " + base64.b64encode(":".join(self.knobs.auth).encode()).decode()
            if request.headers.get("Authorization") != expected:
                return _error(401, 40100, "Unauthorized")
        if self.knobs.fail_next:
            status = self.knobs.fail_next.pop(0)
            return _error(status, status * 100, f"injected failure {status}")
        return None

    async def _json_body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise _BadStatement(40000, "request body is not JSON") from None
        if not isinstance(body, dict):
            raise _BadStatement(40000, "request body must be a JSON object")
        return body

    # -- /ksql --------------------------------------------------------------------------------

    async def _ksql(self, request: web.Request) -> web.Response:
        refused = self._gate(request)
        if refused is not None:
            return refused
        try:
            body = await self._json_body(request)
        except _BadStatement as bad:
            return _error(400, bad.code, bad.message)
        text = str(body.get("ksql", "")).strip()
        upper = text.upper().rstrip(";").strip()
        if upper.startswith("SELECT"):
            return _error(400, 40002, "The following statement types should be issued to the websocket "
                          "endpoint '/query': * PRINT * SELECT", statement=text)
        if upper in ("SHOW STREAMS", "LIST STREAMS", "SHOW TABLES", "LIST TABLES"):
            kind = "streams" if "STREAMS" in upper else "tables"
            sources = [self._source_entry(d) for d in self.datasets.values() if d.kind == kind[:-1].upper()]
            return web.json_response([{"@type": kind, "statementText": text, kind: sources, "warnings": []}],
                                     content_type=KSQL_JSON)
        match = re.fullmatch(r"DESCRIBE\s+(?:EXTENDED\s+)?([A-Za-z_][A-Za-z0-9_]*)", upper)
        if match:
            dataset = self.datasets.get(match.group(1))
            if dataset is None:
                return _error(400, 40001, f"Could not find STREAM/TABLE '{match.group(1)}' in the Metastore",
                              statement=text)
            return web.json_response([{"@type": "sourceDescription", "statementText": text,
                                       "sourceDescription": self._description(dataset), "warnings": []}],
                                     content_type=KSQL_JSON)
        return _error(400, 40001, f"line 1:1: statement not supported by the test server: {text}", statement=text)

    @staticmethod
    def _source_entry(dataset: Dataset) -> dict[str, Any]:
        return {"type": dataset.kind, "name": dataset.name, "topic": dataset.topic,
                "keyFormat": "JSON" if sum(k for _, _, k in dataset.columns) > 1 else "KAFKA",
                "valueFormat": "JSON", "isWindowed": False}

    def _description(self, dataset: Dataset) -> dict[str, Any]:
        fields = []
        for name, type_text, key in dataset.columns:
            entry: dict[str, Any] = {"name": name, "schema": {"type": type_text.split("<")[0].split("(")[0],
                                                              "fields": None, "memberSchema": None}}
            if key:
                entry["type"] = "KEY"
            fields.append(entry)
        return {**self._source_entry(dataset), "fields": fields, "partitions": dataset.partitions,
                "replication": 1, "statement": f"CREATE {dataset.kind} {dataset.name} …",
                "timestamp": "", "windowType": "", "readQueries": [], "writeQueries": []}

    async def _close_query(self, request: web.Request) -> web.Response:
        refused = self._gate(request)
        if refused is not None:
            return refused
        try:
            body = await self._json_body(request)
        except _BadStatement as bad:
            return _error(400, bad.code, bad.message)
        closed = self.running.get(str(body.get("queryId")))
        if closed is None:
            return _error(400, 40001, f"No query with id {body.get('queryId')}")
        closed.set()
        self.closed_queries.append(str(body["queryId"]))
        return web.json_response({}, status=200)

    # -- queries ------------------------------------------------------------------------------

    def _plan(self, sql: str) -> _Plan:
        match = _SELECT.match(sql)
        if match is None:
            raise _BadStatement(40001, f"line 1:1: mismatched input or unsupported query: {sql[:200]}")
        dataset = self.datasets.get(match.group("src").upper())
        if dataset is None:
            raise _BadStatement(40001, f"{match.group('src').upper()} does not exist.")
        names, types, keys, picks = [], [], [], []
        index = {name: i for i, (name, _, _) in enumerate(dataset.columns)}
        for item in (part.strip() for part in match.group("cols").split(",")):
            upper = item.upper()
            if upper == "*":
                for i, (name, type_text, key) in enumerate(dataset.columns):
                    picks.append(i), names.append(name), types.append(type_text), keys.append(key)
            elif upper in ("ROWPARTITION", "ROWOFFSET") and not self.knobs.legacy:
                picks.append(upper), names.append(upper), types.append("INTEGER" if upper == "ROWPARTITION" else "BIGINT")
                keys.append(False)
            elif upper in index:
                name, type_text, key = dataset.columns[index[upper]]
                picks.append(index[upper]), names.append(name), types.append(type_text), keys.append(key)
            else:
                raise _BadStatement(40001, f"Column '{upper}' cannot be resolved.")
        where = []
        if match.group("where"):
            for term in re.split(r"\s+AND\s+", match.group("where"), flags=re.IGNORECASE):
                cond = _ROWTIME.match(term)
                if cond is None:
                    raise _BadStatement(40001, f"unsupported WHERE term: {term}")
                where.append((_OPS[cond.group(1)], int(cond.group(2))))
        limit = int(match.group("limit")) if match.group("limit") else None
        return _Plan(dataset, picks, names, types, keys, bool(match.group("emit")), limit, where)

    def _selected(self, plan: _Plan, earliest: bool) -> Iterator[list[Any]]:
        if plan.push and not earliest:
            return
        for rowtime, partition, offset, values in plan.source.rows():
            if all(op(rowtime, bound) for op, bound in plan.where):
                yield [partition if p == "ROWPARTITION" else offset if p == "ROWOFFSET" else values[p]
                       for p in plan.picks]

    async def _planned(self, request: web.Request, key: str) -> tuple[dict[str, Any], _Plan] | web.Response:
        """The request body and its query plan, or the error response (auth, injected 5xx, bad statement)."""
        refused = self._gate(request)
        if refused is not None:
            return refused
        body: dict[str, Any] = {}
        try:
            body = await self._json_body(request)
            return body, self._plan(str(body.get(key, "")))
        except _BadStatement as bad:
            return _error(400, bad.code, bad.message, statement=str(body.get(key, "")))

    async def _query_stream(self, request: web.Request) -> web.StreamResponse:
        if self.knobs.legacy:
            self.requests.append((request.path, "-"))
            return _error(404, 40400, "HTTP 404 Not Found")
        planned = await self._planned(request, "sql")
        if isinstance(planned, web.Response):
            return planned
        body, plan = planned
        delimited = DELIMITED in request.headers.get("Accept", DELIMITED) or "*/*" in request.headers.get("Accept", "")
        earliest = (body.get("properties") or {}).get("auto.offset.reset") == "earliest"
        query_id = f"transient_{plan.source.name}_{uuid.uuid4().int % 10**18}"
        meta = {"queryId": query_id, "columnNames": plan.names, "columnTypes": plan.types}
        response = web.StreamResponse(headers={"Content-Type": DELIMITED if delimited else "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        out = _Body(response, self.knobs)
        closed = self.running.setdefault(query_id, asyncio.Event())
        try:
            if delimited:
                await out.write(json.dumps(meta).encode() + b"\n")
                sep, end = b"\n", b""
            else:
                await out.write(b"[" + json.dumps(meta).encode())
                sep, end = b"", b"]"
            rows = (json.dumps(row).encode() for row in self._selected(plan, earliest))
            if delimited and plan.source.fast_line and plan.picks == list(range(len(plan.source.columns))) \
                    and not plan.where and not plan.push:
                rows = (plan.source.fast_line(i) for i in range(plan.source.count))
            prefix = b"" if delimited else b",\n"
            ok = await self._stream_rows(out, rows, plan, closed, lambda raw: prefix + raw + sep,
                                         error=lambda e: (b"" if delimited else b",") + json.dumps(e).encode() + sep)
            if ok:
                await out.write(end)
                await out.flush()
                await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.running.pop(query_id, None)
        return response

    async def _query(self, request: web.Request) -> web.StreamResponse:
        planned = await self._planned(request, "ksql")
        if isinstance(planned, web.Response):
            return planned
        body, plan = planned
        props = body.get("streamsProperties") or {}
        earliest = "earliest" in (props.get("ksql.streams.auto.offset.reset"), props.get("auto.offset.reset"))
        query_id = f"transient_{plan.source.name}_{uuid.uuid4().int % 10**18}"
        schema = ", ".join(f"`{n}` {t}{' KEY' if k and not plan.push else ''}"
                           for n, t, k in zip(plan.names, plan.types, plan.keys, strict=True))
        response = web.StreamResponse(headers={"Content-Type": KSQL_JSON})
        response.enable_chunked_encoding()
        await response.prepare(request)
        out = _Body(response, self.knobs)
        legacy = self.knobs.legacy
        closed = self.running.setdefault(query_id, asyncio.Event())
        header = json.dumps({"header": {"queryId": query_id, "schema": schema}}).encode()
        # Modern servers separate objects with ",\n" and end with "]"; pre-0.24 ends every object with ",\n".
        first = [True]

        def element(raw: bytes) -> bytes:
            if legacy:
                return raw + b",\n"
            lead = b"" if first[0] else b",\n"
            first[0] = False
            return lead + raw

        try:
            await out.write(b"[" + element(header))
            keys = [i for i, k in enumerate(plan.keys) if k]
            tomb_every = self.knobs.tombstones_every

            def rows() -> Iterator[bytes]:
                for n, row in enumerate(self._selected(plan, earliest), 1):
                    yield json.dumps({"row": {"columns": row}}).encode()
                    if tomb_every and n % tomb_every == 0:
                        dead = [row[i] if i in keys else None for i in range(len(row))]
                        yield json.dumps({"row": {"columns": dead, "tombstone": True}}).encode()

            ok = await self._stream_rows(out, rows(), plan, closed, element,
                                         error=lambda e: element(json.dumps({"errorMessage": e}).encode()))
            if ok:
                if plan.limit is not None and plan.push:
                    await out.write(element(b'{"finalMessage":"Limit Reached"}'))
                await out.write(b"]")
                await out.flush()
                await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.running.pop(query_id, None)
        return response

    async def _stream_rows(self, out: _Body, rows: Iterator[bytes], plan: _Plan, closed: asyncio.Event,
                           frame: Callable[[bytes], bytes], error: Callable[[dict[str, Any]], bytes]) -> bool:
        """Send rows with the knobs applied; False when the body must not be ended normally."""
        knobs = self.knobs
        sent = 0
        for raw in rows if plan.limit is None else itertools.islice(rows, plan.limit):
            if closed.is_set():
                return True
            if knobs.drop_after is not None and sent >= knobs.drop_after:
                await out.flush()
                out.response.force_close()
                transport = out.transport
                if transport is not None:
                    transport.abort()
                return False
            if knobs.error_after is not None and sent >= knobs.error_after:
                await out.write(error({"@type": "generic_error", "error_code": 50000,
                                       "message": "injected: query failed on the server"}))
                await out.write(b"]" if out.json_array else b"")
                await out.flush()
                await out.response.write_eof()
                return False
            if knobs.stall_after is not None and sent >= knobs.stall_after:
                await out.flush()
                while not closed.is_set():
                    if knobs.stall_keepalive_s is None:
                        await closed.wait()  # silence until closed (or the server stops)
                        break
                    await asyncio.sleep(knobs.stall_keepalive_s)
                    await out.write(b"\n")
                    await out.flush()
                return True
            await out.write(frame(raw))
            sent += 1
            if knobs.keepalive_every and sent % knobs.keepalive_every == 0:
                await out.write(b"\n")
            if knobs.row_delay_s:
                await out.flush()
                await asyncio.sleep(knobs.row_delay_s)
        if plan.push and (plan.limit is None or sent < plan.limit):
            await out.flush()
            while not closed.is_set():  # a push query waits for new rows: none come here
                try:
                    await asyncio.wait_for(closed.wait(), 1.0)
                except TimeoutError:
                    await out.write(b"\n")  # keep-alive
                    await out.flush()
        return True


class _Body:
    """Writes a response body in pieces of exactly ``knobs.chunk_bytes`` (splitting lines anywhere)."""

    def __init__(self, response: web.StreamResponse, knobs: Knobs) -> None:
        self.response = response
        self.size = max(1, knobs.chunk_bytes)
        self.slow = knobs.chunk_bytes < 4096
        self.buffer = bytearray()
        self.json_array = response.headers.get("Content-Type") != DELIMITED

    @property
    def transport(self) -> asyncio.Transport | None:
        return self.response._req.transport if self.response._req is not None else None  # type: ignore[attr-defined]

    async def write(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= self.size:
            piece = bytes(self.buffer[: self.size])
            del self.buffer[: self.size]
            await self.response.write(piece)
            if self.slow:
                await asyncio.sleep(0)  # let small pieces reach the socket one by one

    async def flush(self) -> None:
        if self.buffer:
            piece = bytes(self.buffer)
            self.buffer.clear()
            await self.response.write(piece)


# -- datasets -----------------------------------------------------------------------------------

_USER = "STRUCT<`ID` STRING, `NAME` STRING, `EMAIL` STRING, `COUNTRY` STRING, `CITY` STRING>"
_METHOD = "STRUCT<`ID` STRING, `NAME` STRING, `CATEGORY` STRING>"
_PRODUCTS = "ARRAY<STRUCT<`ID` STRING, `NAME` STRING, `CATEGORY` STRING, `PRICE` DOUBLE, `QUANTITY` INTEGER>>"
_TX_COLUMNS = [("TRANSACTION_ID", "STRING", True), ("USER", _USER, False), ("AMOUNT", "DOUBLE", False),
               ("CURRENCY", "STRING", False), ("TRANSACTION_TYPE", "STRING", False),
               ("PAYMENT_METHOD", _METHOD, False), ("PRODUCTS", _PRODUCTS, False), ("STATUS", "STRING", False),
               ("EVENT_TIMESTAMP", "STRING", False)]
_FLAT_COLUMNS = [(n.upper(), t, n == "transaction_id") for n, t in (
    ("transaction_id", "STRING"), ("line_number", "INTEGER"), ("user_id", "STRING"), ("user_country", "STRING"),
    ("amount", "DOUBLE"), ("currency", "STRING"), ("transaction_type", "STRING"), ("payment_method_id", "STRING"),
    ("payment_method_name", "STRING"), ("product_id", "STRING"), ("product_name", "STRING"),
    ("product_category", "STRING"), ("product_price", "DOUBLE"), ("product_quantity", "INTEGER"),
    ("line_total", "DOUBLE"), ("status", "STRING"), ("event_timestamp", "STRING"))]
_EUR_RATES = {"EUR": 1.0, "USD": 0.92, "GBP": 1.17, "CHF": 1.05, "JPY": 0.0062, "SEK": 0.088}


def _partition_of(key: str, partitions: int) -> int:
    return zlib.crc32(key.encode()) % partitions


def _stream(name: str, topic: str, columns: list[tuple[str, str, bool]], records: list[dict[str, Any]],
            partitions: int) -> Dataset:
    """Rows in Kafka order: each record gets the next offset of its key's partition."""
    next_offset: dict[int, int] = defaultdict(int)
    rows: list[Row] = []
    for record in records:
        partition = _partition_of(str(record["TRANSACTION_ID"]), partitions)
        moment = datetime.fromisoformat(record["EVENT_TIMESTAMP"].replace("Z", "+00:00"))
        rows.append((int(moment.timestamp() * 1000), partition, next_offset[partition],
                     [record.get(name) for name, _, _ in columns]))
        next_offset[partition] += 1
    return Dataset(name, "STREAM", topic, columns, lambda: iter(rows), partitions, count=len(rows))


def _table(name: str, columns: list[tuple[str, str, bool]], values: list[list[Any]], partitions: int) -> Dataset:
    rows: list[Row] = [(0, _partition_of(str(v[0]), partitions), i, v) for i, v in enumerate(values)]
    return Dataset(name, "TABLE", name, columns, lambda: iter(rows), partitions, count=len(rows))


def loadgen_datasets(count: int = 2000, *, seed: int = 7, now: datetime | None = None, days: int = 3,
                     partitions: int = 4, anonymization_key: bytes = b"txlake-local-demo-key",
                     blacklist: Blacklist | None = None) -> dict[str, Dataset]:
    """The 4 streams and 4 tables of ksqlDB, from ``count`` load-generator transactions.

    The tables' column types are those of ``ksql/03_tables.sql``: totals ``DECIMAL(38, 2)``, averages ``DOUBLE``.
    """
    now = now or datetime(2026, 11, 24, 18, 0, tzinfo=UTC)
    blacklist = blacklist or Blacklist(countries=frozenset({"RU"}), payment_methods=frozenset({"PM-CRYPTO"}))
    transactions = list(generate(count, seed=seed, now=now, days=days))
    wire = [json.loads(tx.model_dump_json(by_alias=True)) for tx in transactions]
    flat = [json.loads(line.model_dump_json(by_alias=True)) for tx in transactions for line in flatten(tx)]
    anon = [json.loads(anonymize(tx, anonymization_key).model_dump_json(by_alias=True)) for tx in transactions]
    black = [json.loads(b.model_dump_json(by_alias=True)) for tx in transactions
             if (b := blacklisted(tx, blacklist)) is not None]
    summary: dict[tuple[str, str], list[float]] = defaultdict(list)
    per_method: dict[str, tuple[str, list[float]]] = {}
    products: dict[str, dict[str, Any]] = {}
    for tx in transactions:
        summary[(tx.user.id, tx.transaction_type)].append(tx.amount)
        per_method.setdefault(tx.payment_method.id, (tx.payment_method.name, []))[1].append(tx.amount)
        for line in tx.products:
            entry = products.setdefault(line.id, {"name": line.name, "category": line.category, "count": 0,
                                                  "revenue": 0.0, "buyers": set()})
            entry["count"] += line.quantity
            entry["revenue"] += line.price * line.quantity
            entry["buyers"].add(tx.user.id)
    eur: dict[tuple[str, str], list[float]] = defaultdict(list)
    for tx in transactions:
        eur[(tx.user.id, tx.transaction_type)].append(tx.amount * _EUR_RATES[tx.currency])
    agg = lambda xs: [round(sum(xs), 2), len(xs), round(sum(xs) / len(xs), 2)]  # noqa: E731
    datasets = [
        _stream("TRANSACTION_STREAM", "transactions", _TX_COLUMNS, wire, partitions),
        _stream("TRANSACTION_FLATTENED", "TRANSACTION_FLATTENED", _FLAT_COLUMNS, flat, partitions),
        _stream("TRANSACTION_STREAM_ANONYMIZED", "TRANSACTION_STREAM_ANONYMIZED", _TX_COLUMNS, anon, partitions),
        _stream("TRANSACTION_STREAM_BLACKLISTED", "TRANSACTION_STREAM_BLACKLISTED",
                [*_TX_COLUMNS, ("BLACKLIST_REASON", "STRING", False)], black, partitions),
        _table("USER_TRANSACTION_SUMMARY",
               [("USER_ID", "STRING", True), ("TRANSACTION_TYPE", "STRING", True), ("TOTAL_AMOUNT", "DECIMAL(38, 2)", False),
                ("TRANSACTION_COUNT", "BIGINT", False), ("AVG_AMOUNT", "DOUBLE", False)],
               [[u, t, *agg(xs)] for (u, t), xs in sorted(summary.items())], partitions),
        _table("USER_TRANSACTION_SUMMARY_EUR",
               [("USER_ID", "STRING", True), ("TRANSACTION_TYPE", "STRING", True),
                ("TOTAL_AMOUNT_EUR", "DECIMAL(38, 2)", False), ("TRANSACTION_COUNT", "BIGINT", False),
                ("AVG_AMOUNT_EUR", "DOUBLE", False)],
               [[u, t, *agg(xs)] for (u, t), xs in sorted(eur.items())], partitions),
        _table("PAYMENT_METHOD_TOTALS",
               [("PAYMENT_METHOD_ID", "STRING", True), ("PAYMENT_METHOD_NAME", "STRING", False),
                ("TOTAL_AMOUNT", "DECIMAL(38, 2)", False), ("TRANSACTION_COUNT", "BIGINT", False),
                ("AVG_AMOUNT", "DOUBLE", False)],
               [[m, name, *agg(xs)] for m, (name, xs) in sorted(per_method.items())], partitions),
        _table("PRODUCT_PURCHASE_COUNTS",
               [("PRODUCT_ID", "STRING", True), ("PRODUCT_NAME", "STRING", False),
                ("PRODUCT_CATEGORY", "STRING", False), ("PURCHASE_COUNT", "BIGINT", False),
                ("TOTAL_REVENUE", "DECIMAL(38, 2)", False), ("AVG_PRICE", "DOUBLE", False), ("UNIQUE_BUYERS", "BIGINT", False)],
               [[p, e["name"], e["category"], e["count"], round(e["revenue"], 2),
                 round(e["revenue"] / e["count"], 2), len(e["buyers"])] for p, e in sorted(products.items())],
               partitions),
    ]
    return {dataset.name: dataset for dataset in datasets}



def bench_table(count: int, name: str = "USER_TRANSACTION_SUMMARY") -> Dataset:
    """A ``count``-row table shaped like user_transaction_summary, generated lazily, row i on demand."""
    columns = [("USER_ID", "STRING", True), ("TRANSACTION_TYPE", "STRING", True), ("TOTAL_AMOUNT", "DOUBLE", False),
               ("TRANSACTION_COUNT", "BIGINT", False), ("AVG_AMOUNT", "DOUBLE", False)]
    types = ("purchase", "refund", "transfer", "withdrawal")
    base = datetime(2026, 11, 24, tzinfo=UTC)

    def line(i: int) -> bytes:
        count_i = i % 97 + 1
        total = (i * 7919) % 1_000_000 / 100
        return f'["U{i // 4:08d}","{types[i % 4]}",{total},{count_i},{round(total / count_i, 2)}]'.encode()

    def rows() -> Iterator[Row]:
        for i in range(count):
            yield (int((base + timedelta(seconds=i)).timestamp() * 1000), i % 4, i // 4, json.loads(line(i)))

    return Dataset(name, "TABLE", name, columns, rows, 4, fast_line=line, count=count)


def main() -> None:
    parser = argparse.ArgumentParser(description="a test ksqlDB REST server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8088)
    parser.add_argument("--count", type=int, default=2000, help="load-generator transactions")
    parser.add_argument("--bench-rows", type=int, default=0, help="serve USER_TRANSACTION_SUMMARY with N rows")
    parser.add_argument("--row-delay", type=float, default=0.0)
    parser.add_argument("--now", default=None, help="ISO time the generated events end at")
    args = parser.parse_args()
    now = datetime.fromisoformat(args.now) if args.now else None
    datasets = loadgen_datasets(args.count, now=now)
    if args.bench_rows:
        datasets["USER_TRANSACTION_SUMMARY"] = bench_table(args.bench_rows)
    server = KsqlDBTestServer(datasets, Knobs(row_delay_s=args.row_delay))

    async def serve() -> None:
        url = await server.start(args.host, args.port)
        print(f"ksqlDB test server on {url}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
