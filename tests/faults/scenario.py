"""What every fault scenario shares: a sustained load, an RSS probe, and ``txlake verify`` at the end.

A scenario starts a worker, produces at least :data:`MIN_MESSAGES` messages at a steady rate
(``txlake produce``'s generator), injects its fault while the load runs, waits until everything
produced has landed, then runs ``txlake verify --json`` (the CLI, as an operator would) and
requires nothing missing and nothing duplicated. Each run appends one line to
``.infra/fault-results.jsonl`` (docs/testing.md summarises it).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from app.ops.progress import feed_progress, wait_until_landed
from tests.integration.harness import REPO_ROOT, TXLAKE, Deployment, WorkerProcess, produce_demo

TRANSACTIONS = 56_000  # x ~3.66 messages per transaction (4 streams, 3 of them derived) = ~205,000 messages
MIN_MESSAGES = 200_000
RATE = 3_500  # transactions/s: ~13,000 messages/s for ~16 s -- a sustained load, not a backlog
NOW = datetime(2026, 11, 26, 0, 0, tzinfo=UTC)
RESULTS = REPO_ROOT / ".infra" / "fault-results.jsonl"
RSS_LIMIT_MB = 800  # the benchmark's 1M-transaction drain peaks at 362 MB


async def start_load(deployment: Deployment, seed: int, count: int = TRANSACTIONS, rate: float | None = RATE) -> asyncio.Task:
    """Produce in the background; the task's result is the ProduceReport."""
    return asyncio.create_task(produce_demo(deployment, count, seed=seed, now=NOW, rate=rate))


async def landed_total(deployment: Deployment) -> int:
    """Offsets landed over every feed and sink (a progress counter)."""
    rows = await feed_progress(deployment.settings, deployment.feeds)
    return sum(held + 1 for row in rows for held in (row.lake, row.warehouse) if held is not None)


async def wait_for_progress(deployment: Deployment, worker: WorkerProcess, beyond: int, timeout_s: float = 90) -> int:
    """Wait until more than ``beyond`` offsets have landed; fail if the worker died or stalled."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        total = await landed_total(deployment)
        if total > beyond:
            return total
        assert worker.alive(), worker.log()[-3000:]
        await asyncio.sleep(0.2)
    raise AssertionError(f"nothing landed for {timeout_s}s:\n{worker.log()[-3000:]}")


@dataclass
class RssProbe:
    """Samples a process's resident set size (VmRSS) while a fault runs."""

    pid: int
    interval_s: float = 0.2
    samples_kb: list[int] = field(default_factory=list)
    _task: asyncio.Task | None = None

    def start(self) -> RssProbe:
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        status = Path(f"/proc/{self.pid}/status")
        while True:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.samples_kb.append(int(line.split()[1]))
            except FileNotFoundError:
                return
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> float:
        """Stop sampling; the peak in MB."""
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        return max(self.samples_kb, default=0) / 1024


def run_verify(deployment: Deployment) -> dict:
    """``txlake verify --json`` against the deployment; its parsed report (exit code in ``exit_code``)."""
    env = {**deployment.workers[0].env} if deployment.workers else None
    done = subprocess.run([TXLAKE, "verify", "--json"], env=env, capture_output=True, timeout=300, cwd=REPO_ROOT)
    assert done.stdout, done.stderr.decode(errors="replace")[-3000:]
    report = json.loads(done.stdout)
    report["exit_code"] = done.returncode
    return report


def problems(report: dict) -> list[str]:
    """Every partition that is not OK, with what is wrong (empty when verify passed)."""
    found = []
    for feed in report["feeds"]:
        for p in feed["partitions"]:
            if not p["ok"]:
                found.append(json.dumps({k: v for k, v in p.items() if v not in ([], {}, None, False, 0)})[:2000])
        live = feed.get("live_state")  # table feeds: the fact table's live rows
        if live is not None and not live["ok"]:
            found.append(json.dumps({"feed": feed["feed"], **{k: v for k, v in live.items() if v not in ([], {}, 0)}})[:2000])
    return found


async def finish(
    deployment: Deployment,
    load: asyncio.Task,
    scenario: str,
    faults: int,
    rss: RssProbe | None = None,
    **figures: object,
) -> dict:
    """Wait for the load and the landing, verify, record the result; returns the verify report.

    With ``rss``, the probe is stopped once everything landed, its peak recorded and held to
    :data:`RSS_LIMIT_MB`. ``figures`` measured by the scenario (``resume_s``: seconds from each
    restart until landing resumed) are recorded with the result.
    """
    produced = await load
    await wait_until_landed(deployment.settings, deployment.feeds, timeout_s=300)
    measured = {} if rss is None else {"max_rss_mb": round(await rss.stop())}
    report = run_verify(deployment)
    messages = sum(produced.counts.values())
    if deployment.settings.derives_streams:
        # The producer wrote the transactions; the worker wrote the derived streams (as ksqlDB
        # would have): the load is every record of the stream feeds, as verify counted them.
        messages = sum(
            p["in_lake"] + p["in_dead_letters"] for f in report["feeds"] if f["dataset"].startswith("streams/")
            for p in f["partitions"]
        )
    assert messages >= MIN_MESSAGES, f"only {messages} messages produced"
    missing = sum(b - a + 1 for f in report["feeds"] for p in f["partitions"] for a, b in p["missing"])
    duplicated = sum(b - a + 1 for f in report["feeds"] for p in f["partitions"] for a, b in p.get("duplicated", ()))
    record_result(
        scenario=scenario,
        faults=faults,
        messages=messages,
        records_checked=report["records_checked"],
        missing=missing,
        duplicated=duplicated,
        verify_s=report["elapsed_s"],
        ok=report["ok"],
        **measured,
        **figures,
    )
    assert report["exit_code"] == 0 and report["ok"], "\n".join(problems(report))
    assert report["records_checked"] >= messages
    assert measured.get("max_rss_mb", 0) < RSS_LIMIT_MB, f"worker RSS peaked at {measured['max_rss_mb']} MB"
    return report


def record_result(**fields: object) -> None:
    """Append one run's figures to :data:`RESULTS` (docs/testing.md summarises it)."""
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("a") as out:
        out.write(json.dumps({"at": datetime.now(UTC).isoformat(timespec="seconds"), **fields}) + "\n")


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of a Prometheus metric's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def infra(service: str, action: str) -> None:
    """``scripts/infra/<service>.sh <action>`` (start / stop keep the service's data)."""
    subprocess.run(["bash", str(REPO_ROOT / f"scripts/infra/{service}.sh"), action], check=True, capture_output=True, timeout=180)
