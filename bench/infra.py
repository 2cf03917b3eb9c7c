"""The benchmarks' infrastructure: isolated runs on the local services, the worker process, the machine.

Everything a benchmark needs around the code it measures, and nothing it measures itself:

* :class:`Run` / :func:`new_run` -- the names that isolate one run (topic suffix, consumer group,
  lake, state directory, MySQL database, web port) and the environment the worker gets;
* MySQL: a fresh database built from ``sql/`` as root over the local socket, dropped at the end;
* Kafka: leaders, topic and group deletion, Kafka's own ``ConsumerPerformance`` tool;
* :func:`fill` -- fresh topics filled with the seeded demo load (``tools.loadgen``);
* :class:`WorkerProcess` -- ``txlake worker`` as a subprocess with its log in a file;
* what the results record about the machine: CPUs, memory, versions, the commit.

Uses the services ``make up`` starts (``scripts/infra``); never imports the test suite's harness.
"""

from __future__ import annotations

import asyncio
import os
import platform
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from tests.sql_scripts import WAREHOUSE_SCRIPTS, read_sql
from tools.ports import free_port

__all__ = [
    "REPO",
    "Run",
    "WorkerProcess",
    "consumer_performance",
    "create_database",
    "delete_groups",
    "delete_topics",
    "drop_database",
    "fill",
    "git_state",
    "java_version",
    "kafka_version",
    "log",
    "machine_info",
    "new_run",
    "package_versions",
    "pid_from",
    "stream_topics",
    "wait_for_leaders",
    "warehouse_counts",
]

REPO = Path(__file__).resolve().parents[1]
KAFKA_LIB = REPO / ".infra" / "kafka" / "lib"
KAFKA_LOG4J = REPO / "scripts" / "infra" / "kafka" / "log4j2.properties"
KAFKA_PID_FILE = REPO / ".infra" / "kafka" / "kafka.pid"
MARIADB_PID_FILE = REPO / ".infra" / "mariadb" / "mariadbd.pid"
MYSQL_SOCKET = REPO / ".infra" / "mariadb" / "mysqld.sock"
APP_USER_HOSTS = ("127.0.0.1", "localhost")


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



def new_run(rotate_interval_ms: int) -> Run:
    run_id = uuid.uuid4().hex[:8]
    scratch = Path("/tmp") / f"txlake-bench-{run_id}"  # noqa: S108 - a fresh uuid-named scratch directory of one benchmark run
    scratch.mkdir(parents=True)
    run = Run(
        run_id=run_id,
        scratch=scratch,
        suffix=f"-bench-{run_id}",
        group_id=f"txlake-bench-{run_id}",
        database=f"txlake_bench_{run_id}",
        web_port=free_port(),
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
                except Exception:  # noqa: BLE001, S110 - nothing granted
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


# ------------------------------------------------------------------------------------- fill


def stream_topics(feeds: tuple) -> Any:
    """The load generator's four stream topics, from the feeds (suffix included)."""
    from tools.loadgen import StreamTopics

    by_name = {feed.name: feed.topic for feed in feeds}
    return StreamTopics(
        transactions=by_name["transaction_stream"],
        flattened=by_name["transaction_flattened"],
        anonymized=by_name["transaction_stream_anonymized"],
        blacklisted=by_name["transaction_stream_blacklisted"],
    )


async def fill(settings: Any, feeds: tuple, partitions: int, transactions: int) -> dict[str, Any]:
    """Create the feeds' topics and produce ``transactions`` seeded transactions with their derived streams."""
    from app.ops.topics import create_topics
    from tools.loadgen import produce

    created = await create_topics(settings, feeds, partitions)
    await wait_for_leaders(settings.kafka.bootstrap_servers, created, partitions)
    topics = stream_topics(feeds)
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


# ---------------------------------------------------------------------------- the worker process


class WorkerProcess:
    """``txlake worker`` (this venv's) in a subprocess, its output in a log file.

    ``env`` is added to this process's environment; the worker runs in ``cwd`` (its ``.env``
    and relative paths resolve there).
    """

    def __init__(self, env: dict[str, str], log_path: Path, cwd: Path = REPO) -> None:
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        txlake = Path(sys.executable).parent / "txlake"
        with open(self.log_path, "ab") as log_file:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [str(txlake), "worker"], env=self.env, cwd=str(self.cwd), stdout=log_file, stderr=subprocess.STDOUT
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def exit_code(self) -> int | None:
        """The exit code once the worker has exited, else None."""
        return None if self.process is None else self.process.poll()

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM and wait (the worker finishes its batches); SIGKILL after ``timeout_s``. The exit code."""
        if self.process is None:
            return None
        if self.process.poll() is not None:
            return self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log(f"the worker ignored SIGTERM for {timeout_s:.0f} s: killing it")
            self.process.kill()
            return self.process.wait(10)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


# ------------------------------------------------------------------------------- the machine


def pid_from(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
        return pid if Path(f"/proc/{pid}").exists() else None
    except (OSError, ValueError):
        return None


def broker_pid() -> int | None:
    """The local Kafka broker's pid (``scripts/infra``), if it runs."""
    return pid_from(KAFKA_PID_FILE)


def mariadb_pid() -> int | None:
    """The local MariaDB server's pid (``scripts/infra``), if it runs."""
    return pid_from(MARIADB_PID_FILE)


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
