"""The ksqlDB client against the test ksqlDB server, over real sockets (no Kafka needed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.core.settings import KsqlDBSettings
from app.ksqldb import (
    KsqlDBAuthError,
    KsqlDBBadStatement,
    KsqlDBClient,
    KsqlDBStalled,
    KsqlDBStreamError,
    KsqlDBUnavailable,
    write_parquet,
)
from tests.ksqldb_server import Knobs, KsqlDBTestServer, loadgen_datasets
from tools.ports import free_port

DATASETS = loadgen_datasets(600)
EARLIEST = {"auto.offset.reset": "earliest"}


@pytest.fixture
async def server() -> AsyncIterator[KsqlDBTestServer]:
    server = KsqlDBTestServer(DATASETS, Knobs())
    await server.start()
    yield server
    await server.stop()


def _client(server: KsqlDBTestServer, **settings: object) -> KsqlDBClient:
    options = {"url": server.url, "retries": 2, "retry_backoff_s": 0.01, **settings}
    return KsqlDBClient(KsqlDBSettings(**options))


async def _all_rows(client: KsqlDBClient, sql: str, **kwargs: object) -> tuple[list[list[object]], object]:
    rows: list[list[object]] = []
    async with client.query(sql, EARLIEST, **kwargs) as query:
        async for batch in query.batches():
            rows.extend(batch)
    return rows, query


def _expected(name: str) -> list[list[object]]:
    return [values for _, _, _, values in DATASETS[name].rows()]


@pytest.mark.parametrize("accept", ["delimited", "json"])
@pytest.mark.parametrize("chunk", [7, 65_536])
async def test_pull_query_on_query_stream_in_both_formats_any_chunking(
    server: KsqlDBTestServer, accept: str, chunk: int
) -> None:
    server.knobs.chunk_bytes = chunk
    server.knobs.keepalive_every = 50
    async with _client(server) as client:
        rows, query = await _all_rows(client, "SELECT * FROM TRANSACTION_STREAM;", accept=accept)
    assert rows == _expected("TRANSACTION_STREAM")
    assert query.complete and query.query_id and [c.name for c in query.columns][:2] == ["TRANSACTION_ID", "USER"]
    assert server.requests[-1][0] == "/query-stream"


async def test_pre_024_server_falls_back_to_query_with_keepalives_and_tombstones(server: KsqlDBTestServer) -> None:
    server.knobs.legacy = True
    server.knobs.chunk_bytes = 11
    server.knobs.keepalive_every = 3
    server.knobs.tombstones_every = 4
    async with _client(server) as client:
        rows, query = await _all_rows(client, "SELECT * FROM PAYMENT_METHOD_TOTALS;")
        assert client.legacy is True
    assert rows == _expected("PAYMENT_METHOD_TOTALS")
    assert query.tombstones == len(rows) // 4 > 0
    assert query.columns[0].key and not query.columns[1].key  # KEY marker of the /query header
    assert [path for path, _ in server.requests] == ["/query-stream", "/query"]


async def test_pre_024_server_has_no_row_coordinates(server: KsqlDBTestServer) -> None:
    server.knobs.legacy = True
    async with _client(server) as client:
        with pytest.raises(KsqlDBBadStatement, match="ROWPARTITION") as caught:
            await _all_rows(client, "SELECT *, ROWPARTITION, ROWOFFSET FROM TRANSACTION_STREAM;")
    assert caught.value.error_code == 40001 and caught.value.status == 400


async def test_push_query_with_limit_ends_with_final_message_on_query(server: KsqlDBTestServer) -> None:
    server.knobs.legacy = True
    async with _client(server) as client:
        rows, query = await _all_rows(client, "SELECT * FROM TRANSACTION_STREAM EMIT CHANGES LIMIT 5;")
    assert rows == _expected("TRANSACTION_STREAM")[:5] and query.final_message == "Limit Reached"


async def test_push_query_is_closed_with_close_query(server: KsqlDBTestServer) -> None:
    async with _client(server) as client:
        async with client.query("SELECT * FROM TRANSACTION_FLATTENED EMIT CHANGES;", EARLIEST,
                                stall_timeout_s=None) as query:
            seen = 0
            async for batch in query.batches():
                seen += len(batch)
                if seen >= 10:
                    break
        assert not query.complete
    assert server.closed_queries == [query.query_id]


async def test_mid_stream_error_message_raises_with_its_code(server: KsqlDBTestServer) -> None:
    server.knobs.error_after = 20
    for accept in ("delimited", "json"):
        async with _client(server) as client:
            with pytest.raises(KsqlDBStreamError, match="injected") as caught:
                await _all_rows(client, "SELECT * FROM TRANSACTION_STREAM;", accept=accept)
        assert caught.value.error_code == 50000
    server.knobs.legacy = True
    async with _client(server) as client:
        with pytest.raises(KsqlDBStreamError) as caught:
            await _all_rows(client, "SELECT * FROM TRANSACTION_STREAM;")
    assert caught.value.error_code == 50000


async def test_connection_dropped_mid_stream_is_an_error_not_a_short_result(server: KsqlDBTestServer) -> None:
    server.knobs.drop_after = 100
    server.knobs.chunk_bytes = 300
    async with _client(server) as client:
        with pytest.raises(KsqlDBStreamError, match="connection lost|ended"):
            await _all_rows(client, "SELECT * FROM TRANSACTION_STREAM;")
    # never retried silently (the client then tries to close the server-side query, best effort)
    assert [path for path, _ in server.requests if path != "/close-query"] == ["/query-stream"]


async def test_keepalives_without_rows_count_as_a_stall(server: KsqlDBTestServer) -> None:
    server.knobs.stall_after = 5
    server.knobs.stall_keepalive_s = 0.05
    async with _client(server, stall_timeout_s=0.5) as client:
        started = time.monotonic()
        with pytest.raises(KsqlDBStalled, match="keep-alives"):
            await _all_rows(client, "SELECT * FROM TRANSACTION_STREAM;")
    assert time.monotonic() - started < 20


async def test_silence_hits_the_read_timeout(server: KsqlDBTestServer) -> None:
    server.knobs.stall_after = 5
    async with _client(server, read_timeout_s=0.5) as client:
        with pytest.raises(KsqlDBStalled, match="no data"):
            await _all_rows(client, "SELECT * FROM TRANSACTION_STREAM;")


async def test_slow_stream_arrives_whole(server: KsqlDBTestServer) -> None:
    server.knobs.row_delay_s = 0.002
    async with _client(server, stall_timeout_s=5) as client:
        rows, _ = await _all_rows(client, "SELECT * FROM PRODUCT_PURCHASE_COUNTS;")
    assert rows == _expected("PRODUCT_PURCHASE_COUNTS")


async def test_5xx_is_retried_then_succeeds_and_gives_up_after_the_retries(server: KsqlDBTestServer) -> None:
    server.knobs.fail_next = [503, 500]
    async with _client(server) as client:
        rows, _ = await _all_rows(client, "SELECT * FROM PAYMENT_METHOD_TOTALS;")
    assert rows == _expected("PAYMENT_METHOD_TOTALS")
    server.knobs.fail_next = [503, 503, 503]
    async with _client(server) as client:
        with pytest.raises(KsqlDBUnavailable) as caught:
            await client.sources("tables")
    assert caught.value.error_code == 50300


async def test_connection_refused_is_unavailable_after_retries() -> None:
    port = free_port()
    settings = KsqlDBSettings(url=f"http://127.0.0.1:{port}", retries=2, retry_backoff_s=0.01)
    async with KsqlDBClient(settings) as client:
        with pytest.raises(KsqlDBUnavailable, match="ConnectError"):
            await client.sources("streams")


async def test_basic_auth(server: KsqlDBTestServer) -> None:
    server.knobs.auth = ("reader", "s3cret")
    async with _client(server) as client:
        with pytest.raises(KsqlDBAuthError) as caught:
            await client.sources("streams")
    assert caught.value.error_code == 40100
    async with _client(server, username="reader", password="s3cret") as client:
        assert {s["name"] for s in await client.sources("streams")} == {
            "TRANSACTION_STREAM", "TRANSACTION_FLATTENED", "TRANSACTION_STREAM_ANONYMIZED",
            "TRANSACTION_STREAM_BLACKLISTED"}


async def test_ksql_show_describe_and_statement_errors(server: KsqlDBTestServer) -> None:
    async with _client(server) as client:
        tables = await client.sources("tables")
        assert {t["name"] for t in tables} >= {"USER_TRANSACTION_SUMMARY", "PAYMENT_METHOD_TOTALS"}
        description = await client.describe("user_transaction_summary")
        assert description["partitions"] == 4 and description["fields"][0] == {
            "name": "USER_ID", "schema": {"type": "STRING", "fields": None, "memberSchema": None}, "type": "KEY"}
        with pytest.raises(KsqlDBBadStatement) as caught:
            await client.statement("SELECT * FROM PAYMENT_METHOD_TOTALS;")
        assert caught.value.error_code == 40002 and caught.value.statement
        with pytest.raises(KsqlDBBadStatement, match="does not exist") as caught:
            await _all_rows(client, "SELECT * FROM NOPE;")
        assert caught.value.error_code == 40001


async def test_rows_stream_into_parquet_row_groups(server: KsqlDBTestServer, tmp_path: Path) -> None:
    target = tmp_path / "summary.parquet"
    async with _client(server) as client:
        async with client.query("SELECT * FROM USER_TRANSACTION_SUMMARY;", EARLIEST) as query:
            progress = await write_parquet(query.record_batches(max_rows=100), target, query.schema)
    table = pq.read_table(target)
    assert progress.rows == table.num_rows == DATASETS["USER_TRANSACTION_SUMMARY"].count
    assert pq.ParquetFile(target).num_row_groups == progress.row_groups > 1
    # DECIMAL columns (the totals, as ksql/03_tables.sql types them) arrive as exact decimals.
    first = [Decimal(repr(v)) if pa.types.is_decimal(c.arrow) else v
             for c, v in zip(query.columns, _expected("USER_TRANSACTION_SUMMARY")[0], strict=True)]
    assert table.to_pylist()[0] == dict(zip([c.name for c in query.columns], first, strict=True))
    assert isinstance(table.to_pylist()[0]["TOTAL_AMOUNT"], Decimal)


async def test_query_stream_over_http2_when_the_server_offers_it(tmp_path: Path) -> None:
    """TLS with ALPN: the client speaks HTTP/2 to a server that offers it, HTTP/1.1 when told not to."""
    import subprocess

    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    port = free_port()
    server = KsqlDBTestServer(DATASETS)
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.certfile, config.keyfile = str(cert), str(key)
    config.accesslog = config.errorlog = None
    stop = asyncio.Event()
    serving = asyncio.ensure_future(serve(server.asgi(), config, shutdown_trigger=stop.wait))
    try:
        await asyncio.sleep(0.5)
        for http2, version in ((True, "HTTP/2"), (False, "HTTP/1.1")):
            settings = KsqlDBSettings(url=f"https://127.0.0.1:{port}", ca_file=cert, http2=http2, retries=3,
                                      retry_backoff_s=0.2)
            async with KsqlDBClient(settings) as client:
                rows, query = await _all_rows(client, "SELECT * FROM TRANSACTION_FLATTENED;")
            assert query.http_version == version and query.complete
            assert rows == _expected("TRANSACTION_FLATTENED")
        assert [v for _, v in server.requests] == ["HTTP/2", "HTTP/1.1"]
        # an untrusted certificate is refused (verification on by default)
        async with KsqlDBClient(KsqlDBSettings(url=f"https://127.0.0.1:{port}", retries=0)) as client:
            with pytest.raises(KsqlDBUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
                await _all_rows(client, "SELECT * FROM TRANSACTION_FLATTENED;")
    finally:
        stop.set()
        await serving
