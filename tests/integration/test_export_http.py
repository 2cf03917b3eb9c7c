"""`/exports` on a real worker over real HTTP: the token, validation, 409, progress, cancel, success."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.integration.export_helpers import serving
from tests.ksqldb_server import KsqlDBTestServer, loadgen_datasets

pytestmark = pytest.mark.integration

TOKEN = "export-token-123"
DATASETS = loadgen_datasets(1200, seed=13)


@pytest.fixture
async def ksqldb() -> AsyncIterator[KsqlDBTestServer]:
    async with serving(DATASETS) as server:
        yield server


async def _worker_url(deployment: Any, **env: str) -> str:
    worker = deployment.worker(TXLAKE_SNAPSHOTS__SCHEDULE="", **env).start()
    url = f"http://127.0.0.1:{deployment.env['TXLAKE_WEB__PORT']}"
    async with httpx.AsyncClient() as client, asyncio.timeout(90):
        while True:
            assert worker.alive(), worker.log()[-3000:]
            try:
                if (await client.get(f"{url}/livez")).status_code in (200, 503):
                    return url
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.5)


async def _until(client: httpx.AsyncClient, url: str, headers: dict[str, str], states: set[str]) -> dict[str, Any]:
    async with asyncio.timeout(120):
        while True:
            body = (await client.get(url, headers=headers)).json()
            if body["state"] in states:
                return body
            await asyncio.sleep(0.2)


async def test_exports_endpoint(deploy: Any, ksqldb: KsqlDBTestServer) -> None:
    deployment = await deploy(partitions=1)
    url = await _worker_url(deployment, TXLAKE_WEB__API_TOKEN=TOKEN, TXLAKE_KSQLDB__URL=ksqldb.url,
                            TXLAKE_LAKE__FSYNC="false")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    table = {"source": "USER_TRANSACTION_SUMMARY", "kind": "table"}
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        # authentication
        assert (await http.post("/exports", json=table)).status_code == 401
        wrong = await http.post("/exports", json=table, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
        assert (await http.get("/exports/abc")).status_code == 401
        # validation
        assert (await http.post("/exports", content=b"{not json", headers=auth)).status_code == 400
        bad = await http.post("/exports", json={"source": "x; DROP", "kind": "view"}, headers=auth)
        assert bad.status_code == 422 and {d["field"] for d in bad.json()["details"]} == {"source", "kind"}
        no_range = await http.post("/exports", json={"source": "TRANSACTION_STREAM", "kind": "stream"}, headers=auth)
        assert no_range.status_code == 422 and "range" in no_range.text
        backwards = {"source": "TRANSACTION_STREAM", "kind": "stream",
                     "range": {"from_day": "2026-11-24", "to_day": "2026-11-20"}}
        assert (await http.post("/exports", json=backwards, headers=auth)).status_code == 422
        assert (await http.post("/exports", json={"source": "NOPE", "kind": "table"}, headers=auth)).status_code == 404
        huge = await http.post("/exports", content=b"{" + b" " * 20_000 + b"}", headers=auth)
        assert huge.status_code == 413

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: refused
            for _ in range(40):
                yield b" " * 1000

        # The worker's request-size middleware wants a Content-Length for any body (411 before any
        # handler runs); the endpoint's own 16 KiB limit (413) stands behind it.
        assert (await http.post("/exports", content=chunked(), headers=auth)).status_code == 411
        assert (await http.get("/exports/unknown", headers=auth)).status_code == 404
        # a slow export: 409 for a second one of the same dataset, progress, cancel
        ksqldb.knobs.row_delay_s = 0.01
        ksqldb.knobs.chunk_bytes = 128
        started = await http.post("/exports", json=table, headers=auth)
        assert started.status_code == 202, started.text
        export_id = started.json()["id"]
        assert (await http.post("/exports", json=table, headers=auth)).status_code == 409
        other = await http.post("/exports", json={"source": "PAYMENT_METHOD_TOTALS", "kind": "table"}, headers=auth)
        assert other.status_code == 202  # another dataset runs at the same time
        async with asyncio.timeout(60):
            while (progress := (await http.get(f"/exports/{export_id}", headers=auth)).json())["rows"] < 50:
                await asyncio.sleep(0.2)
        assert progress["state"] == "running" and progress["bytes"] > 0 and progress["elapsed_s"] > 0
        assert (await http.delete(f"/exports/{export_id}", headers=auth)).status_code == 202
        cancelled = await _until(http, f"/exports/{export_id}", auth, {"cancelled", "failed", "succeeded"})
        assert cancelled["state"] == "cancelled", cancelled["errors"]
        ok_other = await _until(http, f"/exports/{other.json()['id']}", auth, {"cancelled", "failed", "succeeded"})
        assert ok_other["state"] == "succeeded" and ok_other["result"]["version"] == 1
        # after the cancel the dataset is free again, and the export completes
        ksqldb.knobs.row_delay_s = 0
        again = await http.post("/exports", json=table, headers=auth)
        assert again.status_code == 202
        done = await _until(http, f"/exports/{again.json()['id']}", auth, {"cancelled", "failed", "succeeded"})
        assert done["state"] == "succeeded", done
        assert done["result"]["version"] == 2  # v1 was the cancelled one, failed and never visible
        # a stream export: the range reaches the export process (an empty lake: the streaming
        # path owns every offset, so nothing is replaced and no row is exported)
        stream = {"source": "transaction_stream", "kind": "stream",
                  "range": {"from_day": "2026-11-22", "to_day": "2026-11-24"}}
        started = await http.post("/exports", json=stream, headers=auth)
        assert started.status_code == 202, started.text
        streamed = await _until(http, f"/exports/{started.json()['id']}", auth, {"cancelled", "failed", "succeeded"})
        assert streamed["state"] == "succeeded", streamed
        assert sorted(streamed["result"]["days"]) == ["2026-11-22", "2026-11-23", "2026-11-24"]
        start, end = (int(datetime(2026, 11, d, tzinfo=UTC).timestamp() * 1000) for d in (22, 25))
        in_range = sum(start <= rowtime < end for rowtime, *_ in DATASETS["TRANSACTION_STREAM"].rows())
        assert streamed["rows"] == 0 and streamed["skipped_rows"] == in_range > 0
        async with asyncio.timeout(30):  # counted when the export process has exited
            while 'txlake_exports_total{kind="table",state="succeeded"} 2.0' not in (metrics := (await http.get("/metrics")).text):
                await asyncio.sleep(0.2)
        assert 'txlake_exports_total{kind="table",state="cancelled"} 1.0' in metrics


async def test_exports_endpoint_is_off_without_a_token(deploy: Any, ksqldb: KsqlDBTestServer) -> None:
    deployment = await deploy(partitions=1)
    url = await _worker_url(deployment, TXLAKE_KSQLDB__URL=ksqldb.url)
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        table = {"source": "USER_TRANSACTION_SUMMARY", "kind": "table"}
        assert (await http.post("/exports", json=table)).status_code == 404
        assert (await http.post("/exports", json=table, headers={"Authorization": "Bearer anything"})).status_code == 404
        assert (await http.get("/exports/x")).status_code == 404
        assert (await http.delete("/exports/x")).status_code == 404
    assert ksqldb.requests == []  # nothing reached ksqlDB
