"""Fixtures for integration tests against the real local services.

Kafka and MariaDB must already be running: start them with ``bash scripts/infra/up.sh`` before
pytest. When a service cannot be reached the fixture FAILS (never skips) with a message saying so.

Environment (same names as the application settings):
  TXLAKE_KAFKA__BOOTSTRAP_SERVERS  default 127.0.0.1:9092
  TXLAKE_MYSQL__PORT               default 3307   (host is always 127.0.0.1)
  TXLAKE_MYSQL__USER               default txlake (application user created by mariadb.sh init)
  TXLAKE_MYSQL__PASSWORD           default txlake-local
Root access for DDL goes over the unix socket <repo>/.infra/mariadb/mysqld.sock (unix_socket auth,
so the tests must run as the OS user root, like the scripts).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import aiomysql
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

REPO_ROOT = Path(__file__).resolve().parents[2]
MYSQL_SOCKET = REPO_ROOT / ".infra" / "mariadb" / "mysqld.sock"
START_HINT = "start the local services first: bash scripts/infra/up.sh"

KAFKA_BOOTSTRAP = os.environ.get("TXLAKE_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092")
MYSQL_HOST = "127.0.0.1"
MYSQL_PORT = int(os.environ.get("TXLAKE_MYSQL__PORT", "3307"))
MYSQL_APP_USER = os.environ.get("TXLAKE_MYSQL__USER", "txlake")
MYSQL_APP_PASSWORD = os.environ.get("TXLAKE_MYSQL__PASSWORD", "txlake-local")

from tests.sql_scripts import SQL_DIR, WAREHOUSE_SCRIPTS, read_sql  # noqa: F401 - SQL_DIR re-exported for test_schema


def _quote_ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


# ------------------------------------------------------------------------------------------- Kafka


def _run_async_in_thread(coro: Awaitable[Any]) -> Any:
    """Run a coroutine on a private loop in a worker thread (keeps pytest-asyncio's loops untouched)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _kafka_roundtrip(bootstrap: str) -> dict[str, Any]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        await asyncio.wait_for(admin.start(), timeout=15)
        return await asyncio.wait_for(admin.describe_cluster(), timeout=15)
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Bootstrap servers of the running broker, after a successful metadata round trip."""
    try:
        cluster = _run_async_in_thread(_kafka_roundtrip(KAFKA_BOOTSTRAP))
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        pytest.fail(
            f"Kafka is not reachable at {KAFKA_BOOTSTRAP} ({type(exc).__name__}: {exc}); {START_HINT}",
            pytrace=False,
        )
    if not cluster.get("brokers"):
        pytest.fail(f"Kafka at {KAFKA_BOOTSTRAP} reports no brokers; {START_HINT}", pytrace=False)
    return KAFKA_BOOTSTRAP


def _check_errors(response: Any, action: str) -> None:
    for entry in getattr(response, "topic_errors", None) or getattr(response, "topic_error_codes", []):
        name, code = entry[0], entry[1]
        if code:
            message = entry[2] if len(entry) > 2 else ""
            raise RuntimeError(f"could not {action} topic {name!r}: error code {code} {message or ''}")


@pytest.fixture
async def topic_factory(kafka_bootstrap: str) -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """``await topic_factory(base, partitions=1) -> "<base>-<uuid8>"``; all created topics are deleted at teardown."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=15_000)
    await admin.start()
    created: list[str] = []

    async def create(base_name: str, partitions: int = 1) -> str:
        name = f"{base_name}-{uuid.uuid4().hex[:8]}"
        response = await admin.create_topics(
            [NewTopic(name=name, num_partitions=partitions, replication_factor=1)]
        )
        _check_errors(response, "create")
        created.append(name)
        # Wait until every partition has a leader, so producers/consumers can use it immediately.
        deadline = asyncio.get_running_loop().time() + 15
        while True:
            topics = await admin.describe_topics([name])
            parts = topics[0].get("partitions", []) if topics else []
            if (
                topics
                and topics[0].get("error_code", 0) == 0
                and len(parts) == partitions
                and all(p.get("leader", -1) >= 0 for p in parts)
            ):
                return name
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"topic {name} has no leaders after 15 s: {topics}")
            await asyncio.sleep(0.1)

    try:
        yield create
    finally:
        try:
            if created:
                await admin.delete_topics(created)
        finally:
            await admin.close()


# ------------------------------------------------------------------------------------------- MySQL


@pytest.fixture(scope="session")
def mysql_admin_dsn() -> dict[str, Any]:
    """aiomysql connection kwargs for root over the local unix socket (unix_socket authentication)."""
    if not MYSQL_SOCKET.is_socket():
        pytest.fail(f"MariaDB socket {MYSQL_SOCKET} does not exist; {START_HINT}", pytrace=False)
    return {
        "unix_socket": str(MYSQL_SOCKET),
        "user": "root",
        "password": "",
        "charset": "utf8mb4",
        "autocommit": True,
    }


@dataclass(frozen=True)
class WarehouseDB:
    """A fresh per-test warehouse database and the application user's credentials for it."""

    database: str
    host: str
    port: int
    user: str
    password: str

    def __getitem__(self, key: str) -> Any:  # dict-style access: warehouse_db["database"]
        return getattr(self, key)

    @property
    def connect_kwargs(self) -> dict[str, Any]:
        """aiomysql.connect(**kwargs) for the application user on this database."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "db": self.database,
            "charset": "utf8mb4",
            "autocommit": False,
        }


async def _admin_connect(dsn: dict[str, Any]) -> aiomysql.Connection:
    try:
        return await asyncio.wait_for(aiomysql.connect(**dsn), timeout=10)
    except Exception as exc:  # noqa: BLE001 - any failure: one message with the hint
        pytest.fail(
            f"cannot connect to MariaDB as root over {dsn.get('unix_socket')} "
            f"({type(exc).__name__}: {exc}); {START_HINT}",
            pytrace=False,
        )


@pytest.fixture
async def warehouse_db(mysql_admin_dsn: dict[str, Any]) -> AsyncIterator[WarehouseDB]:
    """Create ``txlake_t_<uuid8>`` with sql/02 + sql/03, grant the app user DML on it, drop it afterwards."""
    database = f"txlake_t_{uuid.uuid4().hex[:8]}"
    db_id = _quote_ident(database)
    hosts = ("127.0.0.1", "localhost")
    conn = await _admin_connect(mysql_admin_dsn)
    try:
        async with conn.cursor() as cur:
            await cur.execute(
                "SELECT COUNT(*) FROM mysql.user WHERE user = %s AND host IN (%s, %s)",
                (MYSQL_APP_USER, *hosts),
            )
            (count,) = await cur.fetchone()
            if count != len(hosts):
                pytest.fail(
                    f"application user {MYSQL_APP_USER!r} is missing; run: bash scripts/infra/mariadb.sh init",
                    pytrace=False,
                )
            await cur.execute(
                f"CREATE DATABASE {db_id} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            )
            await cur.execute(f"USE {db_id}")
            for script in WAREHOUSE_SCRIPTS:
                for statement in read_sql(script):
                    await cur.execute(statement)
            for host in hosts:
                await cur.execute(
                    f"GRANT SELECT, INSERT, UPDATE, DELETE ON {db_id}.* TO %s@%s",
                    (MYSQL_APP_USER, host),
                )
        yield WarehouseDB(
            database=database,
            host=MYSQL_HOST,
            port=MYSQL_PORT,
            user=MYSQL_APP_USER,
            password=MYSQL_APP_PASSWORD,
        )
    finally:
        # A fresh connection: the test may have restarted the server under the first one.
        conn.close()
        conn = await _admin_connect(mysql_admin_dsn)
        try:
            async with conn.cursor() as cur:
                await cur.execute(f"DROP DATABASE IF EXISTS {db_id}")
                # Database-level grants outlive DROP DATABASE: revoke them so mysql.db stays clean.
                for host in hosts:
                    try:
                        await cur.execute(
                            f"REVOKE ALL PRIVILEGES ON {db_id}.* FROM %s@%s", (MYSQL_APP_USER, host)
                        )
                    except aiomysql.Error:
                        pass
        finally:
            await conn.ensure_closed()


@pytest.fixture
async def warehouse_conn(warehouse_db: WarehouseDB) -> AsyncIterator[aiomysql.Connection]:
    """A connection to the per-test database as the application user (autocommit off)."""
    conn = await aiomysql.connect(**warehouse_db.connect_kwargs)
    try:
        yield conn
    finally:
        await conn.ensure_closed()


# ---------------------------------------------------------------------------------- Deployments


@pytest.fixture
async def deploy(tmp_path: Path, warehouse_db: WarehouseDB) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Factory: ``await deploy(partitions=2, **env)`` -> an isolated txlake deployment.

    Each deployment has its own topics, consumer group, lake and worker state in this test's
    ``tmp_path`` and the test's warehouse database. At teardown MariaDB is started again (a
    test may have stopped it), every worker is stopped and the topics are deleted.
    """
    from tests.integration.harness import delete_deployment_topics, make_deployment

    made = []

    async def make(partitions: int = 2, **env: str) -> Any:
        deployment = await make_deployment(tmp_path, warehouse_db, partitions, **env)
        made.append(deployment)
        return deployment

    yield make
    subprocess.run(["bash", str(REPO_ROOT / "scripts/infra/mariadb.sh"), "start"], check=True, capture_output=True)
    for deployment in made:
        for worker in deployment.workers:
            worker.stop()
        await delete_deployment_topics(deployment)
