"""Running the real ``txlake worker`` process against the real services, and reading what it landed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiomysql
import pyarrow.dataset as ds
from aiokafka.admin import AIOKafkaAdminClient

from app.core.feeds import Feed, load_feeds
from app.core.settings import Settings
from app.ops.topics import create_topics
from app.tables.state import state_table_names
from tools.env_settings import settings_from_env
from tools.loadgen import StreamTopics, generate, produce
from tools.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
TXLAKE = str(REPO_ROOT / ".venv" / "bin" / "txlake")


@dataclass
class Deployment:
    """One isolated txlake deployment: its own topics, consumer group, lake and warehouse database."""

    env: dict[str, str]
    settings: Settings
    feeds: tuple[Feed, ...]
    workdir: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    def feed(self, name: str) -> Feed:
        return next(feed for feed in self.feeds if feed.name == name)

    def worker(self, *args: str, **extra_env: str) -> WorkerProcess:
        """A ``txlake worker`` of this deployment (``args``, e.g. ``"--role", "tables"``), not started yet."""
        worker = WorkerProcess({**self.env, **extra_env}, self.workdir / f"worker-{len(self.workers)}.log", args)
        self.workers.append(worker)
        return worker


async def make_deployment(tmp_path: Path, warehouse: Any, partitions: int = 2, **overrides: str) -> Deployment:
    suffix = f"-{uuid.uuid4().hex[:8]}"
    env = {
        "TXLAKE_TOPIC_SUFFIX": suffix,
        "TXLAKE_KAFKA__GROUP_ID": f"txlake-test{suffix}",
        "TXLAKE_LAKE__ROOT": str(tmp_path / "lake"),
        "TXLAKE_DATADIR": str(tmp_path / "faust"),
        "TXLAKE_MYSQL__HOST": warehouse.host,
        "TXLAKE_MYSQL__PORT": str(warehouse.port),
        "TXLAKE_MYSQL__USER": warehouse.user,
        "TXLAKE_MYSQL__PASSWORD": warehouse.password,
        "TXLAKE_MYSQL__DATABASE": warehouse.database,
        "TXLAKE_BATCHING__ROTATE_INTERVAL_MS": "500",
        "TXLAKE_BATCHING__FLUSH_SIZE": "500",
        "PYTHONUNBUFFERED": "1",
        "TXLAKE_KAFKA__COMMIT_INTERVAL_MS": "500",
        "TXLAKE_KAFKA__SESSION_TIMEOUT_MS": "6000",
        "TXLAKE_KAFKA__HEARTBEAT_INTERVAL_MS": "1000",
        "TXLAKE_ERRORS__RETRY_BACKOFF_MAX_MS": "2000",
        "TXLAKE_WEB__PORT": str(free_port()),
        "TXLAKE_BLACKLIST__COUNTRIES": '["RU"]',
        # Compaction rewrites day files under the tests' feet; the tests of compaction turn it on.
        "TXLAKE_LAKE__COMPACTION__ENABLED": "false",
        **overrides,
    }
    settings = settings_from_env(env)
    feeds = load_feeds(settings)
    await create_topics(settings, feeds, partitions)
    return Deployment(env, settings, feeds, tmp_path)


async def delete_deployment_topics(deployment: Deployment) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=deployment.settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        owned = [feed.topic for feed in deployment.feeds] + [deployment.settings.dead_letter_topic]
        owned += [deployment.settings.table_deltas_topic]
        owned += [f"{deployment.settings.faust_app_id}-{name}-changelog" for name in state_table_names()]
        await admin.delete_topics([topic for topic in owned if topic in existing])
    finally:
        await admin.close()


class WorkerProcess:
    """``txlake worker`` in a subprocess, with its log in a file."""

    def __init__(self, env: dict[str, str], log_path: Path, args: tuple[str, ...] = ()) -> None:
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.args = tuple(args)
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at: float | None = None  # time.monotonic() of the process start

    def start(self) -> WorkerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            [TXLAKE, "worker", *self.args], env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT
        )
        log.close()
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, like an OOM kill or a node failure."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def read_lake(deployment: Deployment, feed_name: str):
    """The feed's dataset as a pyarrow Table, read as a reader would: hive partitioning over the glob,
    or the latest version of the Delta table (``lake.format = "delta"``)."""
    root = Path(deployment.settings.lake.root) / deployment.feed(feed_name).dataset
    if not root.exists():
        return None
    if deployment.settings.lake.format == "delta":
        from deltalake import DeltaTable

        return DeltaTable(str(root)).to_pyarrow_table()
    dataset = ds.dataset(root, format="parquet", partitioning="hive")
    return dataset.to_table()


def rows_per_day(table) -> Counter:
    days = Counter()
    for year, month, day in zip(
        table.column("year").to_pylist(), table.column("month").to_pylist(), table.column("day").to_pylist(), strict=True
    ):
        days[(int(year), int(month), int(day))] += 1
    return days


def expected_days(records) -> Counter:
    return Counter((r.event_timestamp.year, r.event_timestamp.month, r.event_timestamp.day) for r in records)


def latest_per_key(transactions, key) -> dict[str, Any]:
    """Expected dimension content: the newest event per key (ties: the later one)."""
    latest: dict[str, Any] = {}
    for tx in transactions:
        k = key(tx)
        if k not in latest or tx.event_timestamp >= latest[k].event_timestamp:
            latest[k] = tx
    return latest


async def fetch_all(warehouse: Any, sql: str) -> list[tuple]:
    connection = await aiomysql.connect(**warehouse.connect_kwargs)
    try:
        async with connection.cursor() as cursor:
            await cursor.execute(sql)
            return list(await cursor.fetchall())
    finally:
        connection.close()


def naive_utc(moment: datetime) -> datetime:
    """A UTC-aware datetime as the warehouse stores it (the session time zone is UTC)."""
    return moment.replace(tzinfo=None)


def stream_topics(deployment: Deployment) -> StreamTopics:
    return StreamTopics(
        transactions=deployment.feed("transaction_stream").topic,
        flattened=deployment.feed("transaction_flattened").topic,
        anonymized=deployment.feed("transaction_stream_anonymized").topic,
        blacklisted=deployment.feed("transaction_stream_blacklisted").topic,
    )


async def produce_demo(deployment: Deployment, count: int, *, seed: int, now: datetime, rate: float | None = None,
                       days: int = 3, late_fraction: float = 0.05):
    """Produce like `txlake produce`; returns the ProduceReport.

    Like `txlake produce`, the derived streams are written here only when the worker does not
    derive them itself (`streams.derive` off).
    """
    s = deployment.settings
    return await produce(
        s.kafka.bootstrap_servers,
        stream_topics(deployment),
        count,
        seed=seed,
        rate=rate,
        anonymization_key=s.anonymization.key.get_secret_value().encode(),
        blacklist=s.blacklist,
        now=now,
        derived=not s.derives_streams,
        days=days,
        late_fraction=late_fraction,
    )


class Rounds:
    """Rounds of generated transactions, one seed each (ids ``TX-<seed>-<n>`` never collide).

    A test that kills workers starts a round per incarnation, so each one has work to be killed
    in, however fast the one before it caught up.
    """

    def __init__(self, deployment: Deployment, *, first_seed: int, count: int, rate: float, now: datetime) -> None:
        self.deployment, self.count, self.rate, self.now = deployment, count, rate, now
        self.first_seed = first_seed
        self.seeds: list[int] = []

    def next(self) -> asyncio.Task:
        """Start producing the next round; the task ends when the broker acknowledged all of it."""
        seed = self.first_seed + len(self.seeds)
        self.seeds.append(seed)
        return asyncio.create_task(produce_demo(self.deployment, self.count, seed=seed, now=self.now, rate=self.rate))

    def transactions(self) -> list:
        """Every transaction of the rounds started so far."""
        return [tx for seed in self.seeds for tx in generate(self.count, seed=seed, now=self.now)]

    @property
    def total(self) -> int:
        """How many transactions the rounds started so far produce."""
        return self.count * len(self.seeds)


async def wait_for_progress(landed_total, beyond: int, worker: WorkerProcess, timeout_s: float = 90,
                            finished=None) -> bool:
    """Wait until ``await landed_total()`` exceeds ``beyond`` (the worker landed something new): True.

    With ``finished`` (an async predicate: the load is over and everything landed), also stop
    waiting when it holds: False. One loop checks both: checked one after the other, the last
    records could land in between and leave nothing to wait for.
    The deadline is wall time: a progress poll reads every ledger and takes about a second itself.
    Raises AssertionError, with the worker's log, if the worker died or landed nothing in time.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await landed_total() > beyond:
            return True
        if finished is not None and await finished():
            return False
        assert worker.alive(), worker.log()[-3000:]
        await asyncio.sleep(0.2)
    raise AssertionError(f"the worker landed nothing in {timeout_s:.0f} s:\n{worker.log()[-3000:]}")

