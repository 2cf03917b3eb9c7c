"""Benchmark: a large ksqlDB table export streamed through the client into Parquet, in constant memory.

Starts the test ksqlDB server (tests/ksqldb_server.py) in its own process serving a lazily
generated ``USER_TRANSACTION_SUMMARY`` of ``--rows`` rows, then in this process runs the pull
query ``SELECT * FROM USER_TRANSACTION_SUMMARY;`` through :class:`app.ksqldb.KsqlDBClient` and
writes the Arrow batches as Parquet row groups (:func:`app.ksqldb.write_parquet`). Measures rows/s
and this process's peak RSS (``ru_maxrss``: the client side only; the server is another process).

    python -m bench.export_bench --rows 5000000       # writes bench/results/export-LATEST.{json,md}

``--warehouse-rows N`` also runs a full table export of N rows (``txlake export table``'s code:
ksqlDB → snapshot version in the lake and the configured MariaDB) and reports its rate apart:
the warehouse load is the snapshot protocol's, not the client's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq

from app.core.settings import KsqlDBSettings, Settings
from app.exports.request import ExportRequest
from app.exports.status import ExportStatus
from app.exports.table import export_table
from app.ksqldb import KsqlDBClient, write_parquet
from bench.infra import REPO
from bench.report import RESULTS_DIR, write_latest
from tools.ports import free_port

TARGET_ROWS_PER_S = 100_000
TARGET_PEAK_RSS_MB = 300


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _export(url: str, target: Path, batch_rows: int) -> dict[str, float]:
    settings = KsqlDBSettings(url=url, read_timeout_s=120)
    started = time.perf_counter()
    async with KsqlDBClient(settings) as client:
        async with client.query("SELECT * FROM USER_TRANSACTION_SUMMARY;") as query:
            progress = await write_parquet(query.record_batches(max_rows=batch_rows), target, query.schema)
            received = query.bytes
    elapsed = time.perf_counter() - started
    return {"rows": progress.rows, "seconds": round(elapsed, 2), "rows_per_s": round(progress.rows / elapsed),
            "row_groups": progress.row_groups, "parquet_bytes": progress.bytes, "response_bytes": received}


async def _export_to_warehouse(url: str, lake: Path) -> dict[str, float]:
    settings = Settings(ksqldb={"url": url, "read_timeout_s": 120}, lake={"root": str(lake), "fsync": False})
    status = ExportStatus(f"bench-{uuid.uuid4().hex}", "USER_TRANSACTION_SUMMARY", "table")  # a new version each run
    started = time.perf_counter()
    async with KsqlDBClient(settings.ksqldb) as client:
        await export_table(settings, ExportRequest(source="USER_TRANSACTION_SUMMARY", kind="table"), status, client,
                           lambda: None)
    elapsed = time.perf_counter() - started
    return {"rows": status.rows, "seconds": round(elapsed, 2), "rows_per_s": round(status.rows / elapsed),
            "version": status.result["version"], "mysql_port": settings.mysql.port}


@contextlib.contextmanager
def _test_server(rows: int) -> Iterator[str]:
    """The test ksqlDB server in its own process, serving ``rows`` rows of USER_TRANSACTION_SUMMARY."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.ksqldb_server", "--port", str(port), "--count", "200", "--bench-rows", str(rows)],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert server.stdout is not None
        server.stdout.readline()  # "ksqlDB test server on …": listening
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


def markdown(result: dict) -> str:
    """The export benchmark's page."""
    lines = [
        "# ksqlDB export (`make bench-export`)",
        "",
        f"Measured {result['date']} (commit `{result['commit']}`); {result['machine']}.",
        "",
        "| measure | result | target |",
        "|---|---|---|",
        f"| {result['rows']:,} rows, pull query → client → Parquet ({result['batch_rows']:,}-row batches) "
        f"| {result['rows_per_s']:,} rows/s ({result['seconds']} s) | ≥ {TARGET_ROWS_PER_S:,} rows/s |",
        f"| peak RSS of the client process | {result['peak_rss_mb']} MB | ≤ {TARGET_PEAK_RSS_MB} MB |",
    ]
    full = result.get("full_export_to_lake_and_warehouse")
    if full:
        lines.append(
            f"| full table export, {full['rows']:,} rows → snapshot version (lake + MariaDB) "
            f"| {full['rows_per_s']:,} rows/s ({full['seconds']} s) | - |"
        )
    lines += ["", f"Targets {'met' if result['passed'] else 'NOT met'}. Raw figures: `export-LATEST.json` beside this page."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--batch-rows", type=int, default=65_536, help="rows per Arrow batch / Parquet row group")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results directory (default bench/results)")
    parser.add_argument("--warehouse-rows", type=int, default=0,
                        help="also time a full table export (lake + MariaDB) of this many rows")
    args = parser.parse_args()
    with _test_server(args.rows) as url, tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / "export.parquet"
        figures = asyncio.run(_export(url, target, args.batch_rows))
        assert pq.ParquetFile(target).metadata.num_rows == args.rows, "rows lost on the way"
    figures["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    warehouse = None
    if args.warehouse_rows:
        with _test_server(args.warehouse_rows) as url, tempfile.TemporaryDirectory() as scratch:
            warehouse = asyncio.run(_export_to_warehouse(url, Path(scratch)))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    result = {
        "benchmark": "ksqlDB table export → Parquet (client side)",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
                   f"shared with other jobs (load average {os.getloadavg()[0]:.2f} at the end)",
        "batch_rows": args.batch_rows,
        **figures,
        "targets": {"rows_per_s": TARGET_ROWS_PER_S, "peak_rss_mb": TARGET_PEAK_RSS_MB},
        "passed": figures["rows_per_s"] >= TARGET_ROWS_PER_S and figures["peak_rss_mb"] <= TARGET_PEAK_RSS_MB,
        "full_export_to_lake_and_warehouse": warehouse,
    }
    print(json.dumps(result, indent=2))
    raw, page = write_latest("export", result, markdown(result), args.out)
    print(f"written to {raw} and {page}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
