"""How long a restarted worker takes to land again: the resume time of the crash and fault tests.

The *resume time* of a kill is the time from the restarted worker's process start
(:attr:`WorkerProcess.started_at`) until a sink ledger moves past where the killed worker left
it -- records land again. Beside that wall-clock time, :class:`Resume` carries the CPU time the
restarted process had used by then: on a loaded machine the wall-clock time is mostly waiting
for a CPU, while the CPU time and the waits on the group (a session timeout) are the worker's own. A SIGKILLed process writes nothing more, so the ledgers read right
after the kill are exactly where it left them; a lake roll-forward at start-up finishes moves
the ledger already records and does not move it. The ledgers are read directly (the lake's
ledger files, one ``SELECT`` of the warehouse's ``txlake_offset_ledger``) every
:data:`POLL_S`, which keeps the reading cheap and its resolution well under a second.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiomysql

from app.lake.ledger import LedgerEntry
from app.lake.storage import CONTROL_DIR
from tests.integration.harness import Deployment, WorkerProcess

__all__ = ["LedgerWatch", "POLL_S", "Resume", "cpu_seconds"]

POLL_S = 0.1


@dataclass(frozen=True)
class Resume:
    """How long a restarted worker took to land again: wall-clock and its own CPU seconds."""

    wall_s: float
    cpu_s: float


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

Positions = Mapping[str, int]
AllLanded = Callable[[], Awaitable[bool]]  # whether nothing is left to land


class LedgerWatch:
    """Reads every sink ledger of a deployment (local lake and warehouse) as one position map."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self._connection: aiomysql.Connection | None = None

    async def positions(self) -> dict[str, int]:
        """``{"lake:<ledger file>" | "warehouse:<feed>/<topic>/<partition>": landed_through}``."""
        found = {f"lake:{key}": value for key, value in (await asyncio.to_thread(self._lake)).items()}
        for feed, topic, partition, landed in await self._warehouse():
            found[f"warehouse:{feed}/{topic}/{partition}"] = landed
        return found

    def _lake(self) -> dict[str, int]:
        ledgers = Path(self.deployment.settings.lake.root) / CONTROL_DIR / "ledger"
        found = {}
        for path in ledgers.rglob("*.json"):
            try:
                found[str(path.relative_to(ledgers))] = LedgerEntry.from_json(path.read_bytes()).landed_through
            except (FileNotFoundError, ValueError):
                continue  # replaced while read: the next poll sees it
        return found

    async def _warehouse(self) -> list[tuple[str, str, int, int]]:
        mysql = self.deployment.settings.mysql
        if self._connection is None:
            self._connection = await aiomysql.connect(
                host=mysql.host, port=mysql.port, user=mysql.user, password=mysql.password.get_secret_value(),
                db=mysql.database, autocommit=True,
            )
        async with self._connection.cursor() as cursor:
            await cursor.execute("SELECT feed, topic, kafka_partition, landed_through FROM txlake_offset_ledger")
            return list(await cursor.fetchall())

    async def wait_until_moved(
        self, since: Positions, worker: WorkerProcess, timeout_s: float, all_landed: AllLanded | None = None
    ) -> float | None:
        """Wait until a ledger is past ``since``; the ``time.monotonic()`` it was first seen moved.

        ``None`` if ``all_landed()`` says there was nothing left to land (the killed worker landed
        the rest before it died: no resume to measure). Fails if the worker dies or nothing moves
        within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        checked = time.monotonic()
        while time.monotonic() < deadline:
            now = await self.positions()
            seen_at = time.monotonic()
            if any(landed > since.get(key, -1) for key, landed in now.items()):
                return seen_at
            assert worker.alive(), worker.log()[-3000:]
            if all_landed is not None and seen_at - checked > 5:
                checked = seen_at
                if await all_landed():
                    return None
            await asyncio.sleep(POLL_S)
        raise AssertionError(f"no ledger moved for {timeout_s:.0f}s after the restart:\n{worker.log()[-3000:]}")

    async def resume_after_restart(
        self, since: Positions, worker: WorkerProcess, timeout_s: float = 120, all_landed: AllLanded | None = None
    ) -> Resume | None:
        """How long after ``worker``'s process start a ledger moved past ``since`` (None: nothing was left)."""
        assert worker.started_at is not None and worker.process is not None, "the worker was not started"
        moved_at = await self.wait_until_moved(since, worker, timeout_s, all_landed)
        if moved_at is None:
            return None
        return Resume(round(moved_at - worker.started_at, 1), round(cpu_seconds(worker.process.pid), 1))

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
