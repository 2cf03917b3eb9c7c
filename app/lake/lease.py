"""Leases on lake maintenance work, in the warehouse (``txlake_lake_leases``, ``sql/06``).

One row per resource (``compact:streams/transactions:year=2026/month=11/day=25``). Whoever
holds an unexpired row owns the work; a holder renews every third of the lease; a row whose
``expires_at`` has passed (its holder died or stalled) can be taken over. Expiry is judged on the
database's clock, so the workers' clocks do not matter.

The work itself runs in a thread and cannot ask MySQL: :meth:`Lease.check` compares a local
monotonic deadline, set conservatively at each grant or renewal, and raises
:class:`~app.lake.compaction.LeaseLost` unless at least a third of the lease is left. So between a
passing check and the commit that follows it (milliseconds) nobody else can have taken the lease,
unless the holder stalls for longer than a third of the lease in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator

import aiomysql

from app.core.security import mysql_ssl_context
from app.core.settings import MySQLSettings
from app.lake.compaction import LeaseLost

__all__ = ["Lease", "LeaseStore"]

logger = logging.getLogger(__name__)


class Lease:
    """A granted lease: :meth:`check` from any thread, renewed by :meth:`LeaseStore.keep`."""

    def __init__(self, resource: str, lease_s: float, deadline: float) -> None:
        self.resource = resource
        self.lease_s = lease_s
        self.deadline = deadline  # time.monotonic() after which the lease may be someone else's
        self.lost = False

    def check(self) -> None:
        """Raise :class:`LeaseLost` unless the lease is ours for at least a third of its length more."""
        if self.lost or time.monotonic() > self.deadline - self.lease_s / 3:
            raise LeaseLost(f"lease on {self.resource} lost or about to expire")


class LeaseStore:
    """Grants, renews and releases leases for one process (one connection, used serially)."""

    def __init__(self, mysql: MySQLSettings, owner: str | None = None) -> None:
        self.mysql = mysql
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._connection: aiomysql.Connection | None = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> LeaseStore:
        await self._connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def _connect(self) -> None:
        s = self.mysql
        self._connection = await aiomysql.connect(
            host=s.host, port=s.port, user=s.user, password=s.password.get_secret_value(), db=s.database,
            charset="utf8mb4", connect_timeout=s.connect_timeout_s, autocommit=True, ssl=mysql_ssl_context(s),
        )

    async def _execute(self, sql: str, args: tuple) -> tuple[int, list[tuple]]:
        """Run one autocommit statement; a broken connection is replaced once (every statement is idempotent)."""
        async with self._lock:
            for attempt in (1, 2):
                if self._connection is None or self._connection.closed:
                    await self._connect()
                assert self._connection is not None
                try:
                    async with self._connection.cursor() as cursor:
                        await cursor.execute(sql, args)
                        return cursor.rowcount, list(await cursor.fetchall())
                except (aiomysql.OperationalError, aiomysql.InterfaceError):
                    self._connection.close()
                    self._connection = None
                    if attempt == 2:
                        raise
        raise AssertionError("unreachable")

    async def acquire(self, resource: str, lease_s: float) -> Lease | None:
        """The lease on ``resource``, or None when someone else holds it unexpired."""
        lease_us = int(lease_s * 1_000_000)
        asked = time.monotonic()
        # One atomic upsert: take the row if it is free or expired (or ours already), else leave it.
        # expires_at is assigned first; owner follows it (a changed expires_at means we took it).
        await self._execute(
            "INSERT INTO txlake_lake_leases (resource, owner, expires_at) "
            "VALUES (%s, %s, CURRENT_TIMESTAMP(6) + INTERVAL %s MICROSECOND) "
            "ON DUPLICATE KEY UPDATE "
            "acquired_at = IF(expires_at <= CURRENT_TIMESTAMP(6) OR owner = VALUES(owner), CURRENT_TIMESTAMP(6), acquired_at), "
            "expires_at = IF(expires_at <= CURRENT_TIMESTAMP(6) OR owner = VALUES(owner), VALUES(expires_at), expires_at), "
            "owner = IF(expires_at = VALUES(expires_at), VALUES(owner), owner)",
            (resource, self.owner, lease_us),
        )
        _, rows = await self._execute(
            "SELECT owner, TIMESTAMPDIFF(MICROSECOND, CURRENT_TIMESTAMP(6), expires_at) "
            "FROM txlake_lake_leases WHERE resource = %s",
            (resource,),
        )
        if not rows or rows[0][0] != self.owner or rows[0][1] <= 0:
            return None
        return Lease(resource, lease_s, asked + int(rows[0][1]) / 1_000_000)

    async def renew(self, lease: Lease) -> bool:
        """Extend ``lease``; False (and the lease marked lost) when the row is no longer ours."""
        asked = time.monotonic()
        count, _ = await self._execute(
            "UPDATE txlake_lake_leases SET expires_at = CURRENT_TIMESTAMP(6) + INTERVAL %s MICROSECOND "
            "WHERE resource = %s AND owner = %s",
            (int(lease.lease_s * 1_000_000), lease.resource, self.owner),
        )
        if count != 1:
            lease.lost = True
            return False
        lease.deadline = asked + lease.lease_s
        return True

    async def release(self, lease: Lease) -> None:
        """Give the lease up (delete the row if still ours); errors are logged, not raised."""
        try:
            await self._execute("DELETE FROM txlake_lake_leases WHERE resource = %s AND owner = %s",
                                (lease.resource, self.owner))
        except Exception as exc:  # noqa: BLE001 - the lease then simply expires
            logger.warning("lease on %s not released (it expires by itself): %s", lease.resource, exc)

    async def keep(self, lease: Lease, stop: asyncio.Event) -> None:
        """Renew ``lease`` every third of its length until ``stop`` is set or the lease is lost.

        Stopped by an event, not cancelled: a statement cancelled half-way would break the connection.
        """
        while True:
            try:
                await asyncio.wait_for(stop.wait(), lease.lease_s / 3)
                return
            except asyncio.TimeoutError:
                pass
            try:
                if not await self.renew(lease):
                    logger.error("lease on %s was taken over", lease.resource)
                    return
            except Exception as exc:  # noqa: BLE001 - keep trying; check() stops the work if it runs out
                logger.warning("lease on %s not renewed: %s", lease.resource, exc)

    @contextlib.asynccontextmanager
    async def holding(self, resource: str, lease_s: float) -> AsyncIterator[Lease | None]:
        """``async with store.holding(r, s) as lease:`` -- None if busy; renewed meanwhile; released after."""
        lease = await self.acquire(resource, lease_s)
        if lease is None:
            yield None
            return
        stop = asyncio.Event()
        keeper = asyncio.get_running_loop().create_task(self.keep(lease, stop))
        try:
            yield lease
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            await self.release(lease)
