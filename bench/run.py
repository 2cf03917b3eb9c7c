"""txlake's throughput benchmark: one command, one isolated run, figures you can compare.

    .venv/bin/python -m bench.run [--transactions N] [--partitions N] [--skip-naive] [--keep] [--profile]

Steps (see bench/README.md): fill fresh topics with generated transactions and their derived
streams; time the ``txlake worker`` draining them into the lake and the warehouse; run two
references on the same ``transactions`` topic (a naive consumer written like the original
scripts, and Kafka's own ConsumerPerformance); print a table, write
``bench/results/<UTC timestamp>.json`` and rewrite the bench section of README.md (or
``bench/LATEST.md`` when README.md has no ``<!-- bench:start -->``/``<!-- bench:end -->`` markers).

Everything is isolated per run: a unique topic suffix, consumer group, lake and state directory
under /tmp, and a fresh MySQL database created as root over the local socket; topics, groups and
database are removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from tests.sql_scripts import WAREHOUSE_SCRIPTS, read_sql

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO / "bench"
RESULTS_DIR = BENCH_DIR / "results"
KAFKA_LIB = REPO / ".infra" / "kafka" / "lib"
KAFKA_LOG4J = REPO / "scripts" / "infra" / "kafka" / "log4j2.properties"
KAFKA_PID_FILE = REPO / ".infra" / "kafka" / "kafka.pid"
MARIADB_PID_FILE = REPO / ".infra" / "mariadb" / "mariadbd.pid"
MYSQL_SOCKET = REPO / ".infra" / "mariadb" / "mysqld.sock"
APP_USER_HOSTS = ("127.0.0.1", "localhost")
README = REPO / "README.md"
LATEST = BENCH_DIR / "LATEST.md"
MARK_START, MARK_END = "<!-- bench:start -->", "<!-- bench:end -->"

TARGET_MSG_PER_S = 50_000
TARGET_NAIVE_RATIO = 10.0
TARGET_PEAK_RSS_MB = 400.0

CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ----------------------------------------------------------------------------------- the run


@dataclass
class Run:
    """The names that isolate one benchmark run."""

    run_id: str
    scratch: Path
    suffix: str
    group_id: str
    database: str
    web_port: int
    env: dict[str, str] = field(default_factory=dict)

    @property
    def lake(self) -> Path:
        return self.scratch / "lake"

    @property
    def datadir(self) -> Path:
        return self.scratch / "worker-state"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def new_run(rotate_interval_ms: int) -> Run:
    run_id = uuid.uuid4().hex[:8]
    scratch = Path("/tmp") / f"txlake-bench-{run_id}"
    scratch.mkdir(parents=True)
    run = Run(
        run_id=run_id,
        scratch=scratch,
        suffix=f"-bench-{run_id}",
        group_id=f"txlake-bench-{run_id}",
        database=f"txlake_bench_{run_id}",
        web_port=_free_port(),
    )
    run.env = {
        "TXLAKE_TOPIC_SUFFIX": run.suffix,
        "TXLAKE_KAFKA__GROUP_ID": run.group_id,
        "TXLAKE_LAKE__ROOT": str(run.lake),
        "TXLAKE_DATADIR": str(run.datadir),
        "TXLAKE_MYSQL__DATABASE": run.database,
        "TXLAKE_BATCHING__ROTATE_INTERVAL_MS": str(rotate_interval_ms),
        "TXLAKE_BLACKLIST__COUNTRIES": '["RU"]',  # demo blacklist: the blacklisted stream gets data
        # The stream path as issue 2 defines it (lake + dimensions); the table path, which adds the
        # derivation to the transaction feed, has its own benchmark (bench/tables.py).
        "TXLAKE_TABLES__DERIVE": "false",
        # Landing alone; landing beside compaction is measured by bench/lake.py.
        "TXLAKE_LAKE__COMPACTION__ENABLED": "false",
        "TXLAKE_WEB__HOST": "127.0.0.1",
        "TXLAKE_WEB__PORT": str(run.web_port),
    }
    return run


# ------------------------------------------------------------------------------------- MySQL


async def _root_connection():
    import aiomysql

    return await aiomysql.connect(unix_socket=str(MYSQL_SOCKET), user="root", password="", charset="utf8mb4", autocommit=True)


async def create_database(database: str, app_user: str) -> str:
    """Create ``database`` with sql/02 + sql/03 and grant the app user DML on it; returns MariaDB's version."""
    conn = await _root_connection()
    try:
        async with conn.cursor() as cur:
            await cur.execute(f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
            await cur.execute(f"USE `{database}`")
            for script in WAREHOUSE_SCRIPTS:
                for statement in read_sql(script):
                    await cur.execute(statement)
            for host in APP_USER_HOSTS:
                await cur.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON `{database}`.* TO %s@%s", (app_user, host))
            await cur.execute("SELECT VERSION()")
            (version,) = await cur.fetchone()
        return str(version)
    finally:
        conn.close()


async def drop_database(database: str, app_user: str) -> None:
    conn = await _root_connection()
    try:
        async with conn.cursor() as cur:
            await cur.execute(f"DROP DATABASE IF EXISTS `{database}`")
            for host in APP_USER_HOSTS:
                try:  # database-level grants outlive DROP DATABASE
                    await cur.execute(f"REVOKE ALL PRIVILEGES ON `{database}`.* FROM %s@%s", (app_user, host))
                except Exception:  # noqa: BLE001 - nothing granted
                    pass
    finally:
        conn.close()


async def warehouse_counts(settings: Any) -> dict[str, int]:
    import aiomysql

    s = settings.mysql
    conn = await aiomysql.connect(
        host=s.host, port=s.port, user=s.user, password=s.password.get_secret_value(), db=s.database
    )
    try:
        counts = {}
        async with conn.cursor() as cur:
            for table in ("dim_users", "dim_payment_methods", "txlake_offset_ledger"):
                await cur.execute(f"SELECT COUNT(*) FROM {table}")
                (counts[table],) = await cur.fetchone()
        return counts
    finally:
        conn.close()


# ------------------------------------------------------------------------------------- Kafka


async def wait_for_leaders(bootstrap: str, topics: list[str], partitions: int, timeout_s: float = 30) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            described = await admin.describe_topics(topics)
            ready = [
                t for t in described
                if not t.get("error_code")
                and len(t.get("partitions", [])) == partitions
                and all(p.get("leader", -1) >= 0 for p in t["partitions"])
            ]
            if len(ready) == len(topics):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics without leaders after {timeout_s:.0f}s: {described}")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, topics: list[str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [t for t in topics if t in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


def kafka_java(main_class: str, *args: str, timeout_s: float, logs_dir: Path) -> subprocess.CompletedProcess:
    command = ["java", "-Xms128m", "-Xmx512m", f"-Dkafka.logs.dir={logs_dir}"]
    if KAFKA_LOG4J.exists():
        command.append(f"-Dlog4j2.configurationFile={KAFKA_LOG4J}")
    command += ["-cp", f"{KAFKA_LIB}/*", main_class, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)


def delete_groups(bootstrap: str, groups: list[str], logs_dir: Path) -> None:
    """Best effort: aiokafka's admin cannot delete groups, Kafka's ConsumerGroupCommand can."""
    if not groups:
        return
    args = ["--bootstrap-server", bootstrap, "--delete"]
    for group in groups:
        args += ["--group", group]
    try:
        done = kafka_java("org.apache.kafka.tools.consumer.group.ConsumerGroupCommand", *args, timeout_s=60, logs_dir=logs_dir)
        if done.returncode != 0:
            log(f"could not delete consumer groups {groups}: {(done.stdout + done.stderr).strip()[-300:]}")
    except (OSError, subprocess.TimeoutExpired) as exc:
        log(f"could not delete consumer groups {groups}: {exc}")


def consumer_performance(bootstrap: str, topic: str, messages: int, group: str, logs_dir: Path) -> dict[str, Any]:
    """Run Kafka's ConsumerPerformance on ``topic`` and parse its summary line."""
    done = kafka_java(
        "org.apache.kafka.tools.ConsumerPerformance",
        "--bootstrap-server", bootstrap, "--topic", topic, "--messages", str(messages),
        "--timeout", "60000", "--group", group,
        timeout_s=180, logs_dir=logs_dir,
    )
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    header_at = next((i for i, line in enumerate(lines) if "nMsg.sec" in line), None)
    if done.returncode != 0 or header_at is None or header_at + 1 >= len(lines):
        raise RuntimeError(f"ConsumerPerformance failed (rc {done.returncode}): {(done.stdout + done.stderr)[-800:]}")
    names = [name.strip() for name in lines[header_at].split(",")]
    values = [value.strip() for value in lines[header_at + 1].split(",")]
    row: dict[str, Any] = dict(zip(names, values, strict=False))
    for name, value in list(row.items()):
        if name not in ("start.time", "end.time"):
            row[name] = float(value)
    row["topic"] = topic
    row["elapsed_s"] = row["data.consumed.in.nMsg"] / row["nMsg.sec"] if row["nMsg.sec"] else None
    return row


def kafka_version() -> str:
    jars = sorted(KAFKA_LIB.glob("kafka_2.13-*.jar"))
    match = re.search(r"kafka_2\.13-([\d.]+)\.jar", jars[0].name) if jars else None
    return match.group(1) if match else "unknown"


# ---------------------------------------------------------------------------------- /proc probes


def _proc_status(pid: int, field_name: str) -> int | None:
    """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM), in kB."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def _proc_cpu_s(pid: int | None) -> float | None:
    """user + system CPU seconds of a process (all its threads)."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None


def _machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return (total - idle) / CLK_TCK, total / CLK_TCK


def _pid_from(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
        return pid if Path(f"/proc/{pid}").exists() else None
    except (OSError, ValueError):
        return None


class RssSampler(threading.Thread):
    """Samples VmRSS of a process every ``interval_s`` (kB) until stopped."""

    def __init__(self, pid: int, interval_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval_s = pid, interval_s
        self.samples: list[tuple[float, int]] = []
        self._stop_event = threading.Event()
        self._t0 = time.monotonic()

    def run(self) -> None:
        while not self._stop_event.is_set():
            rss = _proc_status(self.pid, "VmRSS")
            if rss is not None:
                self.samples.append((time.monotonic() - self._t0, rss))
            self._stop_event.wait(self.interval_s)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=2)


def machine_info() -> dict[str, Any]:
    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    return {
        "nproc": int(nproc) if nproc.isdigit() else os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "hostname": platform.node(),
    }


def package_versions() -> dict[str, str]:
    versions = {}
    for name in ("faust-streaming", "aiokafka", "aiomysql", "pyarrow", "pandas", "pydantic", "pydantic-core"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_state() -> dict[str, Any]:
    """The commit the worker ran (its code is what is on disk when it starts) and local changes."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    changed = git("status", "--porcelain", "--", "app", "agents", "models", "pyproject.toml", "constraints.txt")
    return {"commit": git("rev-parse", "--short", "HEAD"), "subject": git("log", "-1", "--format=%s"),
            "worker_code_changed": [line.split(maxsplit=1)[-1] for line in changed.splitlines() if line.strip()]}


def java_version() -> str:
    try:
        done = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
        return (done.stderr or done.stdout).splitlines()[0].strip()
    except (OSError, IndexError):
        return "unknown"


# ------------------------------------------------------------------------------------- fill


async def fill(settings: Any, feeds: tuple, partitions: int, transactions: int) -> dict[str, Any]:
    from app.ops.topics import create_topics
    from tools.loadgen import StreamTopics, produce

    created = await create_topics(settings, feeds, partitions)
    await wait_for_leaders(settings.kafka.bootstrap_servers, created, partitions)
    by_name = {feed.name: feed.topic for feed in feeds}
    topics = StreamTopics(
        transactions=by_name["transaction_stream"],
        flattened=by_name["transaction_flattened"],
        anonymized=by_name["transaction_stream_anonymized"],
        blacklisted=by_name["transaction_stream_blacklisted"],
    )
    step = max(1, transactions // 10)
    last_report = [0]

    def progress(sent: int) -> None:
        if sent - last_report[0] >= step or sent == transactions:
            last_report[0] = sent
            log(f"  produced {sent:,}/{transactions:,} transactions")

    report = await produce(
        settings.kafka.bootstrap_servers,
        topics,
        transactions,
        seed=42,
        anonymization_key=settings.anonymization.key.get_secret_value().encode(),
        blacklist=settings.blacklist,
        now=datetime.now(UTC),
        progress=progress,
    )
    total = sum(report.counts.values())
    return {
        "topics_created": created,
        "partitions": partitions,
        "transactions": transactions,
        "messages_per_topic": report.counts,
        "messages_total": total,
        "produce_s": report.elapsed_s,
        "produce_msg_per_s": total / report.elapsed_s if report.elapsed_s else None,
        "produce_tx_per_s": transactions / report.elapsed_s if report.elapsed_s else None,
    }


# ------------------------------------------------------------------------------------- drain


async def _committed_offsets(admin: Any, group: str) -> dict[tuple[str, int], int]:
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    except Exception:  # noqa: BLE001 - the group does not exist yet / coordinator loading
        return {}
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}


def _landed_lake(settings: Any, feeds: tuple, ends: dict[tuple[str, int], int]) -> int:
    """Messages the lake holds (from its ledger files; cheap, safe while the worker runs)."""
    from app.lake.ledger import read_landed_through

    by_topic = {feed.topic: feed for feed in feeds}
    landed = 0
    for (topic, partition), end in ends.items():
        held = read_landed_through(settings.lake.root, by_topic[topic].dataset, topic, partition)
        landed += min(held + 1, end)
    return landed


def _summarise_profile(raw_path: Path, top: int = 30) -> dict[str, Any]:
    """Top functions (self and inclusive) and packages of a ``py-spy record --format raw`` file."""
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0

    def frame_name(frame: str) -> str:
        # "function (path/to/file.py:123)" -> "function (file-ish path)"
        match = re.match(r"^(.*) \((.*?)(?::\d+)?\)$", frame.strip())
        if not match:
            return frame.strip()
        function, path = match.groups()
        for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
            if marker in path:
                path = path.split(marker, 1)[1]
                break
        return f"{function} ({path})"

    def package_of(name: str) -> str:
        path = name[name.rfind("(") + 1 : -1]
        head = path.split("/", 1)[0]
        return head.removesuffix(".py") if "/" in path else path

    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if frames and frames[0].startswith(("thread (", "process ")):
            # --threads / --subprocesses prefixes
            thread_frames = [f for f in frames if f.startswith("thread (")]
            threads[thread_frames[0] if thread_frames else "main"] += count
            frames = [f for f in frames if not f.startswith(("thread (", "process "))]
        if not frames:
            continue
        names = [frame_name(f) for f in frames]
        total += count
        self_counts[names[-1]] += count
        packages[package_of(names[-1])] += count
        for name in set(names):
            inclusive[name] += count

    def table(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "samples": n, "percent": round(100 * n / total, 1)}
            for name, n in counter.most_common(top)
        ]

    return {
        "samples": total,
        "self": table(self_counts),
        "inclusive": table(inclusive),
        "self_by_package": table(packages),
        "threads": {name: n for name, n in threads.most_common()},
    }


async def drain(
    run: Run, settings: Any, feeds: tuple, fill_result: dict[str, Any], timeout_s: float, profile: bool
) -> dict[str, Any]:
    from aiokafka.admin import AIOKafkaAdminClient

    from app.ops.progress import feed_progress

    rows = await feed_progress(settings, feeds)
    ends = {(row.topic, row.partition): row.last_offset + 1 for row in rows}
    total = sum(ends.values())
    if total != fill_result["messages_total"]:
        log(f"warning: Kafka holds {total:,} messages, the producer reported {fill_result['messages_total']:,}")

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    worker_log = run.scratch / "worker.log"
    txlake = Path(sys.executable).parent / "txlake"
    env = {**os.environ, **run.env}
    broker_pid, mariadb_pid = _pid_from(KAFKA_PID_FILE), _pid_from(MARIADB_PID_FILE)
    cpu_before = {"broker": _proc_cpu_s(broker_pid), "mariadb": _proc_cpu_s(mariadb_pid)}
    machine_before = _machine_cpu()
    observer_before = resource.getrusage(resource.RUSAGE_SELF)

    with open(worker_log, "wb") as log_handle:
        t0 = time.monotonic()
        worker = subprocess.Popen([str(txlake), "worker"], env=env, cwd=str(run.scratch), stdout=log_handle, stderr=subprocess.STDOUT)
    sampler = RssSampler(worker.pid)
    sampler.start()
    profiler: subprocess.Popen | None = None
    profile_raw = run.scratch / "profile.raw"
    t_first = t_landed = t_committed = None
    timeline: list[tuple[float, int]] = []
    polls = 0
    poll_cpu_s = 0.0
    poll_errors: list[str] = []
    next_poll = 0.0
    next_report = 5.0
    worker_cpu_s = peak_kb = None
    metrics_summary: dict[str, Any] = {}
    try:
        while True:
            now = time.monotonic() - t0
            if worker.poll() is not None:
                tail = worker_log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the worker exited with code {worker.returncode} during the drain:\n{tail}")
            if now > timeout_s:
                raise TimeoutError(f"not drained after {timeout_s:.0f}s (see {worker_log})")
            if t_first is None and _landed_lake(settings, feeds, ends) > 0:
                t_first = now
                log(f"  first batch landed after {t_first:.1f}s (worker start-up)")
                if profile:
                    profiler = _start_profiler(worker.pid, profile_raw)
            if now >= next_poll:
                next_poll = now + 0.5
                polls += 1
                cpu0 = time.process_time()
                if t_landed is None:
                    try:
                        rows = await feed_progress(settings, feeds)
                    except Exception as exc:  # noqa: BLE001 - e.g. MariaDB restarted by someone else
                        poll_errors.append(f"{now:.1f}s {type(exc).__name__}: {exc}")
                        log(f"  progress poll failed ({type(exc).__name__}: {exc}); the clock keeps running")
                        await asyncio.sleep(0.5)
                        continue
                    landed_lake = sum(min(r.lake + 1, r.last_offset + 1) for r in rows)
                    timeline.append((round(now, 2), landed_lake))
                    if rows and all(row.landed for row in rows):
                        t_landed = time.monotonic() - t0
                        log(f"  everything landed in both sinks after {t_landed:.1f}s")
                committed = await _committed_offsets(admin, run.group_id)
                if all(committed.get(tp, -1) >= end for tp, end in ends.items()):
                    if t_committed is None:
                        t_committed = time.monotonic() - t0
                        log(f"  consumer group committed the end offsets after {t_committed:.1f}s")
                poll_cpu_s += time.process_time() - cpu0
                if t_landed is not None and t_committed is not None:
                    break
                if now >= next_report and timeline:
                    next_report = now + 5.0
                    landed = timeline[-1][1]
                    log(f"  {now:6.1f}s  landed {landed:>10,}/{total:,} ({100 * landed / total:5.1f} %)  "
                        f"RSS {(sampler.samples[-1][1] / 1024) if sampler.samples else 0:.0f} MB")
            await asyncio.sleep(0.1 if t_first is None else 0.05)
        t_done = max(t_landed, t_committed)
        metrics_summary = await asyncio.to_thread(scrape_metrics, run.web_port, run.scratch / "worker-metrics.txt")
        worker_cpu_s = _proc_cpu_s(worker.pid)
        peak_kb = _proc_status(worker.pid, "VmHWM")
    finally:
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            try:
                profiler.wait(timeout=60)
            except subprocess.TimeoutExpired:
                profiler.kill()
        sampler.stop()
        machine_after = _machine_cpu()
        observer_after = resource.getrusage(resource.RUSAGE_SELF)
        cpu_after = {"broker": _proc_cpu_s(broker_pid), "mariadb": _proc_cpu_s(mariadb_pid)}
        stop_started = time.monotonic()
        exit_code = None
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                exit_code = worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                log("the worker ignored SIGTERM for 60 s: killing it")
                worker.kill()
                exit_code = worker.wait()
        else:
            exit_code = worker.returncode
        stop_s = time.monotonic() - stop_started
        await admin.close()

    try:
        final_rows = await feed_progress(settings, feeds)
        all_landed_after_stop: bool | None = all(row.landed for row in final_rows)
    except Exception as exc:  # noqa: BLE001 - informative only
        log(f"final progress check failed: {exc}")
        all_landed_after_stop = None
    messages = total
    transactions = fill_result["transactions"]
    steady_s = _steady_window(timeline, total)
    window_s = t_done - t_first
    machine_busy = machine_after[0] - machine_before[0]
    machine_total = machine_after[1] - machine_before[1]
    observer_cpu = (observer_after.ru_utime + observer_after.ru_stime) - (observer_before.ru_utime + observer_before.ru_stime)

    def delta(name: str) -> float | None:
        before, after = cpu_before[name], cpu_after[name]
        return None if before is None or after is None else after - before

    rss_values = [kb for _, kb in sampler.samples]
    result = {
        "messages": messages,
        "transactions": transactions,
        "startup_s": t_first,
        "landed_s": t_landed,
        "committed_s": t_committed,
        "drain_s": t_done,
        "drain_after_first_batch_s": window_s,
        "msg_per_s": messages / t_done,
        "msg_per_s_after_first_batch": messages / window_s if window_s > 0 else None,
        "tx_per_s": transactions / t_done,
        "tx_per_s_after_first_batch": transactions / window_s if window_s > 0 else None,
        "steady_msg_per_s_10_90": (0.8 * total / steady_s) if steady_s else None,
        "peak_rss_mb": peak_kb / 1024 if peak_kb else None,
        "max_sampled_rss_mb": max(rss_values) / 1024 if rss_values else None,
        "median_sampled_rss_mb": sorted(rss_values)[len(rss_values) // 2] / 1024 if rss_values else None,
        "rss_samples": len(rss_values),
        "cpu_s": {
            "worker": worker_cpu_s,
            "broker": delta("broker"),
            "mariadb": delta("mariadb"),
            "bench_observer": observer_cpu,
            "bench_progress_polls": poll_cpu_s,
            "machine_busy": machine_busy,
            "machine_capacity": machine_total,
        },
        "worker_cpu_cores_avg": worker_cpu_s / t_done if worker_cpu_s else None,
        "progress_polls": polls,
        "progress_poll_errors": poll_errors,
        "worker_exit_code": exit_code,
        "worker_stop_s": stop_s,
        "all_landed_after_stop": all_landed_after_stop,
        "timeline": timeline,
        "rss_timeline_mb": [(round(t, 1), round(kb / 1024, 1)) for t, kb in sampler.samples[:: max(1, len(sampler.samples) // 300)]],
        "worker_log": str(worker_log),
        "worker_metrics": metrics_summary,
        "dead_letters_logged": worker_log.read_text(errors="replace").count("dead-lettering"),
    }
    if profile and profile_raw.exists():
        result["profile"] = _summarise_profile(profile_raw)
        result["profile"]["raw"] = str(profile_raw)
    return result


def scrape_metrics(port: int, save_to: Path) -> dict[str, Any]:
    """The worker's own batch and flush metrics from its /metrics endpoint (Prometheus text)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError as exc:
        return {"error": str(exc)}
    save_to.write_text(text)
    sums: dict[str, dict[str, float]] = {}
    pattern = re.compile(r'^(txlake_batch_records|txlake_sink_flush_seconds)_(sum|count)\{([^}]*)\} ([0-9.eE+-]+)$')
    for line in text.splitlines():
        match = pattern.match(line)
        if not match:
            continue
        metric, kind, labels, value = match.groups()
        label = ",".join(part.split("=", 1)[1].strip('"') for part in labels.split(","))
        sums.setdefault(f"{metric}[{label}]", {})[kind] = float(value)
    summary = {}
    for key, entry in sorted(sums.items()):
        count, total = entry.get("count", 0.0), entry.get("sum", 0.0)
        summary[key] = {"count": int(count), "sum": total, "mean": total / count if count else None}
    return summary


def _steady_window(timeline: list[tuple[float, int]], total: int) -> float | None:
    """Seconds between 10 % and 90 % of the messages landed in the lake (linear interpolation)."""

    def crossing(level: float) -> float | None:
        previous = None
        for t, landed in timeline:
            if landed >= level:
                if previous is None or landed == previous[1]:
                    return t
                pt, pl = previous
                return pt + (t - pt) * (level - pl) / (landed - pl)
            previous = (t, landed)
        return None

    low, high = crossing(0.1 * total), crossing(0.9 * total)
    return (high - low) if low is not None and high is not None and high > low else None


def _start_profiler(pid: int, out: Path) -> subprocess.Popen | None:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        log("--profile: py-spy not found (pip install py-spy into .venv for a one-off profile); not profiling")
        return None
    log(f"  profiling the worker with py-spy -> {out}")
    return subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--rate", "100", "--format", "raw", "--threads", "--nonblocking",
         "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def lake_stats(root: Path) -> dict[str, Any]:
    datasets: dict[str, dict[str, int]] = {}
    for path in root.glob("streams/*/**/*.parquet"):
        name = path.relative_to(root).parts[1]
        entry = datasets.setdefault(name, {"files": 0, "bytes": 0})
        entry["files"] += 1
        entry["bytes"] += path.stat().st_size
    return datasets


# ------------------------------------------------------------------------------------ report


def _fmt(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "NOT met")


def evaluate(results: dict[str, Any]) -> dict[str, Any]:
    d = results["drain"]
    naive = results.get("naive")
    perf = results.get("consumer_performance") or {}
    txlake = d["msg_per_s"]
    naive_rate = naive["msg_per_s"] if naive else None
    perf_tx = perf.get("transactions", {}).get("nMsg.sec")
    perf_all = perf.get("all_topics_msg_per_s")
    ratios = {
        "txlake_over_naive": txlake / naive_rate if naive_rate else None,
        "txlake_over_naive_after_first_batch": (
            d["msg_per_s_after_first_batch"] / naive["msg_per_s_from_first_batch"]
            if naive and naive["msg_per_s_from_first_batch"] and d["msg_per_s_after_first_batch"] else None
        ),
        "txlake_over_consumer_performance_transactions": txlake / perf_tx if perf_tx else None,
        "txlake_over_consumer_performance_all_topics": txlake / perf_all if perf_all else None,
    }
    targets = {
        "msg_per_s_ge_50000": {"target": TARGET_MSG_PER_S, "value": txlake, "met": txlake >= TARGET_MSG_PER_S},
        "naive_ratio_ge_10": {
            "target": TARGET_NAIVE_RATIO,
            "value": ratios["txlake_over_naive"],
            "met": None if ratios["txlake_over_naive"] is None else ratios["txlake_over_naive"] >= TARGET_NAIVE_RATIO,
        },
        "peak_rss_le_400_mb": {
            "target": TARGET_PEAK_RSS_MB,
            "value": d["peak_rss_mb"],
            "met": None if d["peak_rss_mb"] is None else d["peak_rss_mb"] <= TARGET_PEAK_RSS_MB,
        },
    }
    return {"ratios": ratios, "targets": targets}


def markdown(results: dict[str, Any]) -> str:
    m, v, f, d = results["machine"], results["versions"], results["fill"], results["drain"]
    naive, perf = results.get("naive"), results.get("consumer_performance") or {}
    ratios, targets = results["evaluation"]["ratios"], results["evaluation"]["targets"]
    per_topic = ", ".join(f"{topic.removesuffix(results['run']['topic_suffix'])} {n:,}" for topic, n in f["messages_per_topic"].items())
    lines = [
        f"Measured {results['date_utc']} with `python -m bench.run --transactions {f['transactions']:,}` "
        f"({f['partitions']} partitions per topic, flush size {results['settings']['flush_size']}, "
        f"rotate interval {results['settings']['rotate_interval_ms']} ms).",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB RAM; Python {v['python']}, "
        f"Kafka {v['kafka']} (single broker, same machine), MariaDB {v['mariadb']}, faust-streaming {v['packages']['faust-streaming']}.",
        "",
        f"Code: commit `{results['git']['commit']}`"
        + (f" with local changes to {', '.join(results['git']['worker_code_changed'])}" if results['git']['worker_code_changed'] else "")
        + ".",
        "",
        f"Load: {f['transactions']:,} transactions = {f['messages_total']:,} messages over 4 topics ({per_topic}); "
        f"produced in {f['produce_s']:.1f} s.",
        "",
        "| measurement | messages/s | notes |",
        "|---|---:|---|",
        f"| txlake worker, whole drain (start-up included) | {_fmt(d['msg_per_s'])} | {d['drain_s']:.1f} s; {_fmt(d['tx_per_s'])} transactions/s |",
        f"| txlake worker, after the first landed batch | {_fmt(d['msg_per_s_after_first_batch'])} | start-up {d['startup_s']:.1f} s; {_fmt(d['tx_per_s_after_first_batch'])} transactions/s |",
        f"| txlake worker, steady state (10 %→90 % landed) | {_fmt(d['steady_msg_per_s_10_90'])} | from the lake ledgers, 0.5 s polls |",
    ]
    if naive:
        lines.append(
            f"| naive consumer (json.loads + pandas + row-by-row upsert), `transactions` only | {_fmt(naive['msg_per_s'])} | "
            f"bounded sample: {naive['messages']:,} messages in {naive['elapsed_s']:.1f} s (stopped by {naive['stopped_by']}) |"
        )
    else:
        lines.append("| naive consumer | skipped | `--skip-naive` |")
    if "transactions" in perf:
        p = perf["transactions"]
        lines.append(
            f"| Kafka ConsumerPerformance, `transactions` | {_fmt(p['nMsg.sec'])} | {p['MB.sec']:.1f} MB/s, {p['data.consumed.in.nMsg']:,.0f} messages, no processing |"
        )
    if perf.get("all_topics_msg_per_s"):
        lines.append(
            f"| Kafka ConsumerPerformance, all 4 topics (one run per topic, times summed) | {_fmt(perf['all_topics_msg_per_s'])} | "
            f"{perf['all_topics_mb']:.0f} MB in {perf['all_topics_s']:.1f} s |"
        )
    lines += [
        "",
        f"Worker peak RSS (VmHWM) {_fmt(d['peak_rss_mb'])} MB; worker CPU {_fmt(d['cpu_s']['worker'], 1)} s "
        f"= {_fmt(d['worker_cpu_cores_avg'], 2)} cores on average over the drain.",
        "",
        "| ratio | value |",
        "|---|---:|",
        f"| txlake ÷ naive | {_fmt(ratios['txlake_over_naive'], 1)}× |",
        f"| txlake ÷ ConsumerPerformance (`transactions`) | {_fmt(ratios['txlake_over_consumer_performance_transactions'], 3)} |",
        f"| txlake ÷ ConsumerPerformance (all 4 topics) | {_fmt(ratios['txlake_over_consumer_performance_all_topics'], 3)} |",
        "",
        "| target | measured | status |",
        "|---|---:|---|",
        f"| ≥ {TARGET_MSG_PER_S:,} messages/s (whole drain) | {_fmt(targets['msg_per_s_ge_50000']['value'])} | {_met(targets['msg_per_s_ge_50000']['met'])} |",
        f"| ≥ {TARGET_NAIVE_RATIO:.0f}× the naive consumer | {_fmt(targets['naive_ratio_ge_10']['value'], 1)}× | {_met(targets['naive_ratio_ge_10']['met'])} |",
        f"| peak RSS ≤ {TARGET_PEAK_RSS_MB:.0f} MB | {_fmt(targets['peak_rss_le_400_mb']['value'])} MB | {_met(targets['peak_rss_le_400_mb']['met'])} |",
        "",
        f"Raw figures: `bench/results/{results['results_file']}`. What is measured and how: `bench/README.md`.",
    ]
    if results.get("profiled"):
        lines.insert(0, "**This run was profiled with py-spy: its timings are perturbed.**\n")
    return "\n".join(lines)


def print_table(results: dict[str, Any]) -> None:
    print()
    print(markdown(results))
    profile = results.get("drain", {}).get("profile")
    if profile:
        print(f"\npy-spy profile of the worker ({profile['samples']:,} samples, raw: {profile['raw']})")
        for kind in ("self", "inclusive", "self_by_package"):
            print(f"  top {kind}:")
            for row in profile[kind][:15]:
                print(f"    {row['percent']:5.1f} %  {row['function']}")
    print()


def write_section(text: str) -> Path:
    """Rewrite the section between the markers in README.md, or write bench/LATEST.md."""
    section = f"{MARK_START}\n{text}\n{MARK_END}"
    if README.exists():
        readme = README.read_text("utf-8")
        if MARK_START in readme and MARK_END in readme and readme.index(MARK_START) < readme.index(MARK_END):
            before, rest = readme.split(MARK_START, 1)
            _, after = rest.split(MARK_END, 1)
            README.write_text(before + section + after, "utf-8")
            return README
    LATEST.write_text(f"# Latest benchmark\n\n{section}\n", "utf-8")
    return LATEST


# -------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=1_000_000, help="transactions to produce (default 1,000,000)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions per topic (default 4)")
    parser.add_argument("--skip-naive", action="store_true", help="skip the naive reference consumer")
    parser.add_argument("--keep", action="store_true", help="keep topics, database, lake and logs")
    parser.add_argument("--naive-messages", type=int, default=100_000, help="naive sample size (default 100,000)")
    parser.add_argument("--naive-seconds", type=float, default=60.0, help="naive time bound (default 60 s)")
    parser.add_argument("--rotate-interval-ms", type=int, default=1000, help="worker rotate interval (default 1000)")
    parser.add_argument("--drain-timeout", type=float, default=1200.0, help="give up the drain after this (s)")
    parser.add_argument("--profile", action="store_true",
                        help="record the worker with py-spy after its first batch (perturbs timings; needs py-spy)")
    parser.add_argument("--no-write", action="store_true", help="do not write results JSON or the README section")
    return parser.parse_args(argv)


async def _amain(args: argparse.Namespace, run: Run, cleanup: dict[str, Any]) -> dict[str, Any]:
    """The four steps; ``cleanup`` is filled as soon as something exists that must be removed."""
    from app.core.feeds import load_feeds
    from app.core.settings import Settings

    settings = Settings()
    feeds = load_feeds(settings)
    results: dict[str, Any] = {
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        "versions": {
            "python": platform.python_version(),
            "kafka": kafka_version(),
            "java": java_version(),
            "packages": package_versions(),
        },
        "run": {
            "run_id": run.run_id,
            "topic_suffix": run.suffix,
            "group_id": run.group_id,
            "database": run.database,
            "scratch": str(run.scratch),
            "args": vars(args),
        },
        "settings": {
            "flush_size": settings.batching.flush_size,
            "rotate_interval_ms": settings.batching.rotate_interval_ms,
            "commit_interval_ms": settings.kafka.commit_interval_ms,
            "mysql_pool_size": settings.mysql.pool_size,
            "lake_compression": settings.lake.compression,
            "blacklist_countries": sorted(settings.blacklist.countries),
        },
        "profiled": args.profile,
        "git": git_state(),
    }
    cleanup.update(groups=[run.group_id], topics=[f.topic for f in feeds] + [settings.dead_letter_topic])

    log(f"run {run.run_id}: database {run.database}, topics *{run.suffix}, scratch {run.scratch}")
    results["versions"]["mariadb"] = await create_database(run.database, settings.mysql.user)
    cleanup["database"] = True

    log(f"1/4 fill: {args.transactions:,} transactions into {args.partitions}-partition topics")
    results["fill"] = await fill(settings, feeds, args.partitions, args.transactions)
    f = results["fill"]
    log(f"  {f['messages_total']:,} messages in {f['produce_s']:.1f}s ({f['produce_msg_per_s']:,.0f} msg/s)")

    log("2/4 txlake worker drain")
    # The stream feeds: the table feeds' topics stay empty here (derivation is off, see new_run).
    feeds = tuple(feed for feed in feeds if not feed.is_table)
    results["drain"] = await drain(run, settings, feeds, results["fill"], args.drain_timeout, args.profile)
    d = results["drain"]
    log(f"  drained {d['messages']:,} messages in {d['drain_s']:.1f}s = {d['msg_per_s']:,.0f} msg/s "
        f"({_fmt(d['msg_per_s_after_first_batch'])} msg/s after the first batch); peak RSS {_fmt(d['peak_rss_mb'])} MB; "
        f"worker exit code {d['worker_exit_code']}")
    results["lake"] = lake_stats(settings.lake.root)
    try:
        results["warehouse"] = await warehouse_counts(settings)
    except Exception as exc:  # noqa: BLE001 - informative only
        results["warehouse"] = {"error": f"{type(exc).__name__}: {exc}"}

    transactions_topic = next(feed.topic for feed in feeds if feed.name == "transaction_stream")
    if args.skip_naive:
        log("3/4 naive consumer: skipped")
    else:
        from bench.naive_consumer import run_naive

        group = f"bench-naive-{run.run_id}"
        cleanup["groups"].append(group)
        log(f"3/4 naive consumer on {transactions_topic}: first {args.naive_messages:,} messages or {args.naive_seconds:.0f}s")
        s = settings.mysql
        naive = await run_naive(
            bootstrap_servers=settings.kafka.bootstrap_servers,
            topic=transactions_topic,
            group_id=group,
            out_dir=run.scratch / "naive-parquet",
            mysql={"host": s.host, "port": s.port, "user": s.user, "password": s.password.get_secret_value(), "db": s.database},
            max_messages=args.naive_messages,
            max_seconds=args.naive_seconds,
        )
        results["naive"] = naive.as_dict()
        log(f"  {naive.messages:,} messages in {naive.elapsed_s:.1f}s = {naive.msg_per_s:,.0f} msg/s (stopped by {naive.stopped_by})")

    log("4/4 Kafka ConsumerPerformance (4.1 has no --include: one run per topic)")
    perf: dict[str, Any] = {"per_topic": {}}
    for index, feed in enumerate(feeds):
        group = f"bench-perf-{run.run_id}-{index}"
        cleanup["groups"].append(group)
        count = f["messages_per_topic"].get(feed.topic, 0)
        if count == 0:
            continue
        row = await asyncio.to_thread(
            consumer_performance, settings.kafka.bootstrap_servers, feed.topic, count, group, run.scratch / "kafka-tools-log"
        )
        perf["per_topic"][feed.name] = row
        log(f"  {feed.topic}: {row['data.consumed.in.nMsg']:,.0f} messages, {row['nMsg.sec']:,.0f} msg/s, {row['MB.sec']:.1f} MB/s")
    perf["transactions"] = perf["per_topic"].get("transaction_stream")
    rows = list(perf["per_topic"].values())
    if rows and all(r["elapsed_s"] for r in rows):
        perf["all_topics_s"] = sum(r["elapsed_s"] for r in rows)
        perf["all_topics_messages"] = sum(r["data.consumed.in.nMsg"] for r in rows)
        perf["all_topics_mb"] = sum(r["data.consumed.in.MB"] for r in rows)
        perf["all_topics_msg_per_s"] = perf["all_topics_messages"] / perf["all_topics_s"]
        # what the transactions-only figure implies for all messages, by bytes (sizes differ per topic)
        tx = perf["transactions"]
        if tx and tx["MB.sec"]:
            perf["implied_all_topics_s_from_transactions_mb_per_s"] = perf["all_topics_mb"] / tx["MB.sec"]
    results["consumer_performance"] = perf
    results["evaluation"] = evaluate(results)
    return results


async def _cleanup(run: Run, cleanup: dict[str, Any]) -> None:
    from app.core.settings import Settings

    settings = Settings()
    try:
        await delete_topics(settings.kafka.bootstrap_servers, cleanup.get("topics", []))
    except Exception as exc:  # noqa: BLE001 - best effort
        log(f"could not delete topics: {exc}")
    if cleanup.get("database"):
        try:
            await drop_database(run.database, settings.mysql.user)
        except Exception as exc:  # noqa: BLE001
            log(f"could not drop database {run.database}: {exc}")
    await asyncio.to_thread(delete_groups, settings.kafka.bootstrap_servers, cleanup.get("groups", []), run.scratch)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.chdir(REPO)
    run = new_run(args.rotate_interval_ms)
    os.environ.update(run.env)
    started = time.monotonic()
    results: dict[str, Any] = {}
    cleanup: dict[str, Any] = {}
    failed = False
    try:
        results = asyncio.run(_amain(args, run, cleanup))
    except BaseException as exc:
        failed = True
        log(f"FAILED: {type(exc).__name__}: {exc}")
        if isinstance(exc, KeyboardInterrupt):
            log("interrupted")
    finally:
        if args.keep:
            log(f"--keep: topics *{run.suffix}, database {run.database} and {run.scratch} are kept")
        else:
            log("cleaning up: topics, consumer groups, database, scratch")
            asyncio.run(_cleanup(run, cleanup))
            shutil.rmtree(run.scratch, ignore_errors=True)
    if failed:
        return 1
    results["bench_wall_s"] = time.monotonic() - started
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results["results_file"] = f"{stamp}.json"
    print_table(results)
    if args.no_write:
        return 0
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / results["results_file"]
    out.write_text(json.dumps(results, indent=2, default=str) + "\n", "utf-8")
    section = write_section(markdown(results))
    log(f"results: {out.relative_to(REPO)}; summary section: {section.relative_to(REPO)}"
        + ("" if section == README else " (README.md has no bench markers)"))
    log(f"bench wall time {results['bench_wall_s']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
