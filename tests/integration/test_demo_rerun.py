"""``make demo`` is re-runnable: each run resets the demo state first, so two runs print the same figures.

Runs ``scripts/demo.sh`` itself twice (reset, topics, produce, worker until landed, report,
snapshots, figures) against the real services, in an isolated deployment of its own: topic
suffix, consumer group, database, lake, worker state and log, web port. A smaller load
(DEMO_COUNT) and a fixed event-time window (DEMO_NOW) keep it short and independent of the
clock. Before the reset existed, the second run doubled every lake row and fact total.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.integration.conftest import MYSQL_APP_USER, REPO_ROOT
from tools.ports import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

COUNT = 600


def _run(script: str, env: dict[str, str], *args: str) -> str:
    result = subprocess.run(["bash", str(REPO_ROOT / "scripts" / script), *args], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{script} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout + result.stderr


def _figures(output: str) -> dict[str, str]:
    """The ``[demo] figures`` block: what -> figure."""
    block = output.split("[demo] figures", 1)[1].splitlines()[1:]
    lines = {}
    for line in block:
        if not line.startswith("  "):
            break
        what, figure = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        lines[what] = figure
    return lines


@pytest.fixture
def demo_env(tmp_path: Path, kafka_bootstrap: str, mysql_admin_dsn: dict) -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    database = f"txlake_demo_{tag}"
    env = {
        **os.environ,
        "DEMO_COUNT": str(COUNT),
        "DEMO_NOW": "2026-03-01T00:00:00+00:00",
        "DEMO_WORKER_LOG": str(tmp_path / "worker.log"),
        "TXLAKE_TOPIC_SUFFIX": f"-demo-{tag}",
        "TXLAKE_KAFKA__GROUP_ID": f"txlake-demo-{tag}",
        "TXLAKE_MYSQL__DATABASE": database,
        "TXLAKE_LAKE__ROOT": str(tmp_path / "lake"),
        "TXLAKE_DATADIR": str(tmp_path / "worker"),
        "TXLAKE_WEB__PORT": str(free_port()),
    }
    yield env
    _run("demo-reset.sh", env)  # what the demo made in Kafka; the database is dropped below
    revoke = " ".join(f"REVOKE ALL PRIVILEGES ON `{database}`.* FROM '{MYSQL_APP_USER}'@'{host}';"
                      for host in ("127.0.0.1", "localhost"))
    subprocess.run(["bash", str(REPO_ROOT / "scripts/infra/mariadb.sh"), "sql", "-e",
                    f"DROP DATABASE IF EXISTS `{database}`; {revoke}"], check=True, capture_output=True)


def test_demo_twice_prints_the_same_figures(demo_env):
    first = _run("demo.sh", demo_env)
    second = _run("demo.sh", demo_env)

    assert "[demo] resetting the demo state" in second
    assert re.search(r"\[demo\] deleted \d+ topics", second), "the second run deletes what the first made"
    assert f"deleted consumer groups: {demo_env['TXLAKE_KAFKA__GROUP_ID']}" in second

    figures = _figures(first)
    assert _figures(second) == figures
    # Each transaction once: rows equal distinct ids, as many as produced.
    stream = figures["lake streams/transaction_stream"]
    assert stream.startswith(f"{COUNT:,} rows, {COUNT:,} distinct transaction ids"), stream
    for what, figure in figures.items():
        if what.startswith("lake "):
            rows, ids = re.match(r"([\d,]+) rows, ([\d,]+) distinct", figure).groups()
            assert rows == ids or what.endswith("transaction_flattened"), (what, figure)
    assert figures["dead letters"] == "1 record"
    assert not re.match(r"0 live rows", figures["warehouse fact_payment_method_totals"])

    # No alarming noise: the expected, self-healing library lines are lowered (app/logs.py).
    worker_log = Path(demo_env["DEMO_WORKER_LOG"]).read_text()
    for output in (first, second, worker_log):
        assert "GroupCoordinatorNotAvailableError" not in output
        assert "producer buffer full" not in output
        assert "Traceback" not in output


async def test_the_reset_refuses_while_a_worker_runs_and_deletes_nothing(deploy):
    """Kafka will not delete a consumer group with members: the reset stops before any topic goes."""
    from aiokafka.admin import AIOKafkaAdminClient

    from app.ops.progress import wait_until_landed
    from tests.integration.harness import produce_demo

    deployment = await deploy()
    await produce_demo(deployment, 50, seed=3, now=datetime(2026, 3, 1, tzinfo=UTC))
    worker = deployment.worker().start()
    await wait_until_landed(deployment.settings, deployment.feeds, timeout_s=240)

    result = subprocess.run([str(REPO_ROOT / ".venv/bin/python"), "-m", "tools.demo", "reset-kafka"], cwd=REPO_ROOT,
                            env={**os.environ, **deployment.env}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "is still running: stop it first" in result.stderr
    assert worker.process.poll() is None
    admin = AIOKafkaAdminClient(bootstrap_servers=deployment.settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
    finally:
        await admin.close()
    assert {feed.topic for feed in deployment.feeds} <= existing


def test_the_reset_touches_only_local_services(tmp_path):
    result = subprocess.run([str(REPO_ROOT / ".venv/bin/python"), "-m", "tools.demo", "reset-kafka"], cwd=REPO_ROOT,
                            env={**os.environ, "TXLAKE_KAFKA__BOOTSTRAP_SERVERS": "kafka.example.invalid:9092",
                                 "TXLAKE_LAKE__ROOT": str(tmp_path)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "the demo resets only local services, not Kafka kafka.example.invalid" in result.stderr
