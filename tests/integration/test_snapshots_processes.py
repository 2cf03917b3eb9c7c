"""Snapshot versions across processes: a SIGKILLed taker, the worker's HTTP endpoints, the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from decimal import Decimal

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.snapshots import Snapshotter
from tests.integration.harness import REPO_ROOT, TXLAKE
from tests.integration.snapshot_helpers import DatabaseClockAhead, fetchall, live_settings, write_live
from tools.ports import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

UTS = "user_transaction_summary"
ROWS = [("u1", "purchase", Decimal("10.00"), 2), ("u2", "purchase", Decimal("5.55"), 1)]


def _env(warehouse_db, lake, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "TXLAKE_MYSQL__HOST": warehouse_db.host,
        "TXLAKE_MYSQL__PORT": str(warehouse_db.port),
        "TXLAKE_MYSQL__USER": warehouse_db.user,
        "TXLAKE_MYSQL__PASSWORD": warehouse_db.password,
        "TXLAKE_MYSQL__DATABASE": warehouse_db.database,
        "TXLAKE_LAKE__ROOT": str(lake),
        "TXLAKE_SNAPSHOTS__ROW_GROUP_ROWS": "10",
        "TXLAKE_SNAPSHOTS__ROWS_PER_FILE": "30",
        "TXLAKE_SNAPSHOTS__LEASE_S": "3",
        **extra,
    }


@pytest.mark.crash
@pytest.mark.parametrize("phase", ["staging", "commit"])
async def test_a_taker_killed_mid_version_leaves_nothing_visible_and_recovery_fails_it(
    warehouse_db, warehouse_conn, tmp_path, phase
):
    lake = tmp_path / "lake"
    taker = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.snapshot_taker", "payment_method_totals", phase],
        env=_env(warehouse_db, lake),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = await asyncio.wait_for(asyncio.to_thread(taker.stdout.readline), timeout=60)
        assert line.split()[0] == ("staged" if phase == "staging" else "committing"), line
        version = int(line.split()[1])
        # While the taker hangs: an open commit transaction already holds fact rows nobody can read.
        assert await fetchall(warehouse_conn, "SELECT COUNT(*) FROM fact_payment_method_totals") == [(0,)]
    finally:
        taker.send_signal(signal.SIGKILL)
        taker.wait(30)
        taker.stdout.close()
    staged = list((lake / "_txlake" / "staging").rglob("*.parquet"))
    assert len(staged) >= 3  # 100 rows, 30 per file: the taker really was mid-version

    settings = live_settings(warehouse_db, lake, lease_s=3)
    snapshotter = Snapshotter(settings)
    (building,) = await snapshotter.versions("payment_method_totals")
    assert (building.version, building.status) == (version, "building")
    # Nothing a reader can see: no rows, no version dir, no latest pointer, an empty "latest" view.
    assert await fetchall(warehouse_conn, "SELECT COUNT(*) FROM fact_payment_method_totals") == [(0,)]
    assert await fetchall(warehouse_conn, "SELECT COUNT(*) FROM v_fact_payment_method_totals_latest") == [(0,)]
    assert not (lake / "tables" / "payment_method_totals").exists()

    snapshotter.clock = DatabaseClockAhead(3.5)  # the lease has run out
    report = await snapshotter.maintain()
    assert report.failed == [("payment_method_totals", version)]
    (failed,) = await snapshotter.versions("payment_method_totals")
    assert failed.status == "failed" and "abandoned" in failed.error and failed.lake_staging_path is None
    assert not list((lake / "_txlake" / "staging").rglob("*.parquet"))
    assert not (lake / "tables" / "payment_method_totals").exists()
    assert await fetchall(warehouse_conn, "SELECT COUNT(*) FROM fact_payment_method_totals") == [(0,)]


async def test_http_post_needs_the_token_and_get_lists_versions(deploy, warehouse_conn):
    await write_live(warehouse_conn, ROWS, {0: 3, 1: 4})
    deployment = await deploy(TXLAKE_WEB__API_TOKEN="s3cret-token", TXLAKE_SNAPSHOTS__SCHEDULE="")
    with_token = deployment.worker().start()
    without_token = deployment.worker(TXLAKE_WEB__API_TOKEN="", TXLAKE_WEB__PORT=str(free_port())).start()
    base = f"http://127.0.0.1:{deployment.settings.web.port}"
    other = f"http://127.0.0.1:{without_token.env['TXLAKE_WEB__PORT']}"
    async with httpx.AsyncClient(timeout=10) as client:
        await _until_up(client, base, with_token)
        await _until_up(client, other, without_token)
        url = f"{base}/snapshots/{UTS}"
        assert (await client.post(url)).status_code == 401
        assert (await client.post(url, headers={"Authorization": "Bearer wrong"})).status_code == 401
        assert (await client.post(f"{other}/snapshots/{UTS}", headers={"Authorization": "Bearer s3cret-token"})).status_code == 403
        assert (await client.post(f"{base}/snapshots/nope", headers={"Authorization": "Bearer s3cret-token"})).status_code == 404

        accepted = await client.post(url, headers={"Authorization": "Bearer s3cret-token"})
        assert accepted.status_code == 202, accepted.text
        body = accepted.json()
        assert body["table"] == UTS and body["version"] == 1 and body["status"] in ("building", "complete")

        for _ in range(120):
            listed = (await client.get(url)).json()["versions"]
            if listed and listed[0]["status"] == "complete" and listed[0]["published_at"]:
                break
            await asyncio.sleep(0.5)
        assert listed[0]["row_count"] == 2
        assert listed[0]["source_offsets"] == {"USER_TRANSACTION_SUMMARY": {"0": 3, "1": 4}}
        everything = (await client.get(f"{other}/snapshots")).json()["versions"]
        assert [(v["table"], v["version"]) for v in everything] == [(UTS, 1)]
        metrics = (await client.get(f"{base}/metrics")).text
        assert f'txlake_snapshot_versions_total{{status="complete",table="{UTS}"}} 1.0' in metrics
        assert f'txlake_snapshot_latest_version{{table="{UTS}"}} 1.0' in metrics
    rows = await fetchall(warehouse_conn, "SELECT COUNT(*) FROM fact_user_transaction_summary WHERE snapshot_version = 1")
    assert rows == [(2,)]


async def _until_up(client: httpx.AsyncClient, base: str, worker) -> None:
    for _ in range(120):
        assert worker.alive(), worker.log()[-3000:]
        try:
            if (await client.get(f"{base}/snapshots")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.5)
    raise AssertionError(f"worker at {base} never answered:\n{worker.log()[-3000:]}")


def _txlake(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([TXLAKE, *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr + done.stdout
    return done


async def test_cli_takes_lists_and_describes_without_a_worker(warehouse_db, warehouse_conn, tmp_path):
    await write_live(warehouse_conn, ROWS, {0: 9})
    lake = tmp_path / "lake"
    env = _env(warehouse_db, lake)
    day = lake / "streams" / "transaction_stream" / "year=2026" / "month=11" / "day=25"
    day.mkdir(parents=True)
    pq.write_table(pa.table({"transaction_id": ["t1", "t2"], "amount": [1.5, 2.5]}), day / "transactions+0+0.parquet")

    taken = json.loads(_txlake(env, "snapshot", "take", UTS, "--json").stdout)
    assert [(v["table"], v["version"], v["status"], v["row_count"]) for v in taken] == [(UTS, 1, "complete", 2)]
    every = json.loads(_txlake(env, "snapshot", "take", "--all", "--json").stdout)
    assert sorted((v["table"], v["version"]) for v in every) == [
        ("payment_method_totals", 1), ("product_purchase_counts", 1), (UTS, 2), ("user_transaction_summary_eur", 1)
    ]
    listed = _txlake(env, "snapshot", "ls", UTS).stdout
    assert "v1" in listed and "v2" in listed and '{"USER_TRANSACTION_SUMMARY":{"0":9}}' in listed

    datasets = {d["dataset"]: d for d in json.loads(_txlake(env, "lake", "ls", "--json").stdout)}
    assert set(datasets) == {
        "streams/transaction_stream", "tables/payment_method_totals", "tables/product_purchase_counts",
        f"tables/{UTS}", "tables/user_transaction_summary_eur",
    }
    assert datasets[f"tables/{UTS}"]["versions"] == 2 and datasets[f"tables/{UTS}"]["latest_version"] == 2
    assert datasets["streams/transaction_stream"]["partitions"] == 1
    stream = json.loads(_txlake(env, "lake", "describe", "streams/transaction_stream", "--json").stdout)
    assert stream["partitions"] == {"year=2026/month=11/day=25": {"files": 1, "bytes": (day / "transactions+0+0.parquet").stat().st_size}}
    assert [f["name"] for f in stream["schema"]] == ["transaction_id", "amount"]
    human = _txlake(env, "lake", "describe", f"tables/{UTS}").stdout
    assert "latest complete: 2" in human and "decimal128(18, 2)" in human
    missing = subprocess.run([TXLAKE, "lake", "describe", "tables/nope"], env=env, capture_output=True, text=True)
    assert missing.returncode == 1


async def test_two_workers_on_one_schedule_make_one_version_per_table_and_fire_time(deploy, warehouse_conn):
    await write_live(warehouse_conn, ROWS, {0: 1})
    deployment = await deploy(TXLAKE_SNAPSHOTS__SCHEDULE="* * * * *")
    workers = [deployment.worker().start(), deployment.worker(TXLAKE_WEB__PORT=str(free_port())).start()]
    query = (
        "SELECT table_name, trigger_key, COUNT(*), SUM(status = 'complete') FROM txlake_snapshot_versions "
        "WHERE triggered_by = 'schedule' GROUP BY table_name, trigger_key"
    )
    for _ in range(240):  # the next minute boundary, plus start-up on a loaded machine
        for worker in workers:
            assert worker.alive(), worker.log()[-3000:]
        rows = await fetchall(warehouse_conn, query)
        if len({r[0] for r in rows if r[3] == r[2]}) == 4:
            break
        await asyncio.sleep(0.5)
    else:
        raise AssertionError(f"no scheduled versions of all four tables: {rows}\n{workers[0].log()[-3000:]}")
    assert all(count == 1 for _, _, count, _ in rows), rows  # one version per table and fire time
    assert all(re.fullmatch(r"schedule:\d{4}-\d\d-\d\dT\d\d:\d\dZ", key) for _, key, _, _ in rows), rows
