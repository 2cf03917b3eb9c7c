"""Failures against the real Kafka and MariaDB are one line naming the address, what failed and what to check.

Each case runs the ``txlake`` command a user would run, with one thing wrong: an address where
nothing listens, a refused password, a database that does not exist, a busy web port, topics that
were never created. The command must exit 1 (run time) or 2 (configuration) with exactly one
line on stderr and no traceback; the worker must say so before Faust starts (nothing on stdout).
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.integration.harness import REPO_ROOT, TXLAKE
from tools.ports import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TXLAKE, *args], env={**os.environ, **env}, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, f"expected one line on stderr:\n{result.stderr}"
    return lines[0]


@pytest.fixture
def env(tmp_path, warehouse_db, kafka_bootstrap) -> dict[str, str]:
    """A working configuration (its own topics suffix, database, lake); each test breaks one thing."""
    tag = uuid.uuid4().hex[:8]
    return {
        "TXLAKE_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "TXLAKE_TOPIC_SUFFIX": f"-{tag}",
        "TXLAKE_KAFKA__GROUP_ID": f"txlake-first-touch-{tag}",
        "TXLAKE_MYSQL__HOST": warehouse_db.host,
        "TXLAKE_MYSQL__PORT": str(warehouse_db.port),
        "TXLAKE_MYSQL__USER": warehouse_db.user,
        "TXLAKE_MYSQL__PASSWORD": warehouse_db.password,
        "TXLAKE_MYSQL__DATABASE": warehouse_db.database,
        "TXLAKE_LAKE__ROOT": str(tmp_path / "lake"),
        "TXLAKE_DATADIR": str(tmp_path / "worker"),
        "TXLAKE_WEB__PORT": str(free_port()),
    }


async def _topics_of(env: dict[str, str]) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=env["TXLAKE_KAFKA__BOOTSTRAP_SERVERS"])
    await admin.start()
    try:
        return [topic for topic in await admin.list_topics() if topic.endswith(env["TXLAKE_TOPIC_SUFFIX"])
                or topic.startswith(env["TXLAKE_KAFKA__GROUP_ID"])]
    finally:
        await admin.close()


@pytest.fixture
async def topics(env):
    """The deployment's topics, for commands that read positions (they ask MySQL only for existing partitions)."""
    created = run("topics", "--partitions", "1", env=env)
    assert created.returncode == 0, created.stderr
    yield
    admin = AIOKafkaAdminClient(bootstrap_servers=env["TXLAKE_KAFKA__BOOTSTRAP_SERVERS"])
    await admin.start()
    try:
        await admin.delete_topics(await _topics_of(env))
    finally:
        await admin.close()


def test_kafka_unreachable(env):
    closed = f"127.0.0.1:{free_port()}"
    for args in (("topics",), ("progress",), ("worker",)):
        result = run(*args, env={**env, "TXLAKE_KAFKA__BOOTSTRAP_SERVERS": closed})
        assert result.returncode == 1, (args, result.stderr)
        line = one_line(result)
        assert line.startswith(f"txlake: cannot reach Kafka at {closed}"), line
        assert "TXLAKE_KAFKA__BOOTSTRAP_SERVERS" in line
        assert result.stdout == ""


def test_mysql_refuses_the_password(env, topics):
    for args in (("progress",), ("worker",), ("snapshot", "ls")):
        result = run(*args, env={**env, "TXLAKE_MYSQL__PASSWORD": "not-the-password"})
        assert result.returncode == 1, (args, result.stderr)
        line = one_line(result)
        assert line.startswith(f"txlake: MySQL at 127.0.0.1:{env['TXLAKE_MYSQL__PORT']} refused user "
                               f"'{env['TXLAKE_MYSQL__USER']}'"), line
        assert "TXLAKE_MYSQL__PASSWORD" in line and "mysql__password" in line
        assert "Faust" not in result.stdout and "Starting" not in result.stdout


def test_mysql_unreachable(env, topics):
    port = free_port()
    result = run("progress", env={**env, "TXLAKE_MYSQL__PORT": str(port)})
    assert result.returncode == 1
    line = one_line(result)
    assert line.startswith(f"txlake: cannot reach MySQL at 127.0.0.1:{port}") and "TXLAKE_MYSQL__PORT" in line


def test_mysql_database_missing(env):
    result = run("snapshot", "ls", env={**env, "TXLAKE_MYSQL__DATABASE": "txlake_no_such_database"})
    assert result.returncode == 1
    line = one_line(result)
    assert "txlake_no_such_database" in line and "TXLAKE_MYSQL__DATABASE" in line


def test_the_worker_refuses_a_busy_web_port(env):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", int(env["TXLAKE_WEB__PORT"])))  # noqa: S104 - the worker binds all interfaces
        taken.listen()
        result = run("worker", env=env)
    assert result.returncode == 1
    line = one_line(result)
    assert f"the web port {env['TXLAKE_WEB__PORT']} is in use" in line and "TXLAKE_WEB__PORT" in line
    assert result.stdout == ""


async def test_produce_refuses_missing_topics_and_creates_none(env):
    result = run("produce", "--count", "10", env=env)
    assert result.returncode == 2
    line = one_line(result)
    assert "does not exist" in line or "do not exist" in line
    assert "txlake topics" in line
    assert await _topics_of(env) == []


def test_progress_before_any_topic_exists(env):
    result = run("progress", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_lake_ls_of_a_root_that_does_not_exist(env):
    result = run("lake", "ls", env=env)  # nothing has landed: the root was never created
    assert result.returncode == 2
    assert "does not exist" in one_line(result)
