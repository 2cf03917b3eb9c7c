"""The lake's filesystem fills up (ENOSPC) mid-load and is freed: the worker waits, retries, catches up.

The lake lives on its own small tmpfs mounted for the test (root may mount here; a failure to
mount fails the test, it never skips). A filler file takes every free byte, so the worker's
Parquet and ledger writes fail with ENOSPC exactly as on a full disk; deleting it frees the
space.
"""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess

import httpx
import pytest

from tests.faults.scenario import RssProbe, finish, metric, start_load, wait_for_progress

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(900)]

LAKE_FS_MB = 192


def _fill(path: str) -> int:
    """Write zeros to ``path`` until the filesystem says ENOSPC; the bytes written."""
    written = 0
    block = b"\0" * (1 << 20)
    with open(path, "wb", buffering=0) as filler:
        while True:
            try:
                written += filler.write(block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return written


@pytest.fixture
def small_lake_fs(tmp_path):
    mount_point = tmp_path / "lake"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={LAKE_FS_MB}m", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


async def test_lake_filesystem_full_then_freed(deploy, small_lake_fs):
    deployment = await deploy(4, TXLAKE_LAKE__ROOT=str(small_lake_fs))
    worker = deployment.worker().start()
    load = await start_load(deployment, seed=65)
    await wait_for_progress(deployment, worker, beyond=20_000)
    rss = RssProbe(worker.process.pid).start()
    filler = os.path.join(small_lake_fs, "filler")
    filled = await asyncio.to_thread(_fill, filler)
    assert filled > 0
    try:
        await asyncio.sleep(8)
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://127.0.0.1:{deployment.settings.web.port}/metrics")).text
        assert metric(metrics, "txlake_sink_retries_total", sink="lake") > 0, "no lake write failed: was the disk full?"
        assert "No space left on device" in worker.log()
        assert worker.alive(), worker.log()[-3000:]
    finally:
        os.unlink(filler)
    await finish(deployment, load, "fill the lake's filesystem, then free it", 1, rss)
    assert worker.alive() and len(deployment.workers) == 1, worker.log()[-3000:]
    assert not list(small_lake_fs.glob("_txlake/staging/**/*.tmp")), "staged leftovers after recovery"
