"""Helpers for the export tests: the test ksqlDB server in the test's loop, ``txlake export`` subprocesses."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.ksqldb_server import Dataset, Knobs, KsqlDBTestServer, Row

REPO_ROOT = Path(__file__).resolve().parents[2]
TXLAKE = str(REPO_ROOT / ".venv" / "bin" / "txlake")


@contextlib.asynccontextmanager
async def serving(datasets: dict[str, Dataset], **knobs: Any) -> AsyncIterator[KsqlDBTestServer]:
    """The test ksqlDB server on a free local port, in the test's own event loop."""
    server = KsqlDBTestServer(datasets, Knobs(**knobs))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@dataclass
class ExportProcess:
    """``txlake export … --progress json`` running as a subprocess (awaited without blocking the loop)."""

    process: asyncio.subprocess.Process
    statuses: list[dict[str, Any]] = field(default_factory=list)
    stderr: str = ""

    @classmethod
    async def start(cls, env: dict[str, str], *args: str) -> ExportProcess:
        process = await asyncio.create_subprocess_exec(
            TXLAKE, "export", *args, "--progress", "json", env={**os.environ, **env}, cwd=REPO_ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def next_status(self) -> dict[str, Any] | None:
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            return None
        self.statuses.append(json.loads(line))
        return self.statuses[-1]

    async def wait_for_rows(self, rows: int, timeout_s: float = 60) -> dict[str, Any]:
        async with asyncio.timeout(timeout_s):
            while True:
                status = await self.next_status()
                assert status is not None, f"export ended early: {self.statuses[-1:]}"
                if status["rows"] >= rows:
                    return status

    async def finish(self, timeout_s: float = 120) -> tuple[int, dict[str, Any]]:
        async with asyncio.timeout(timeout_s):
            while await self.next_status() is not None:
                pass
            assert self.process.stderr is not None
            self.stderr = (await self.process.stderr.read()).decode()
            code = await self.process.wait()
        return code, (self.statuses[-1] if self.statuses else {})

    async def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()


async def kafka_stream_dataset(bootstrap: str, topic: str, name: str, columns: list[tuple[str, str, bool]]) -> Dataset:
    """A ksqlDB stream as ksqlDB would serve it from ``topic``: every message with its real coordinates.

    ROWTIME is the record's EVENT_TIMESTAMP (streams created with ``TIMESTAMP='EVENT_TIMESTAMP'``).
    """
    from datetime import datetime

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    rows: list[Row] = []
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or
                                                               await _partitions(consumer, topic))]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        remaining = {tp for tp in partitions if ends[tp] > 0}
        while remaining:
            batches = await consumer.getmany(timeout_ms=1000)
            for tp, messages in batches.items():
                for message in messages:
                    value = json.loads(message.value)
                    moment = datetime.fromisoformat(value["EVENT_TIMESTAMP"].replace("Z", "+00:00"))
                    rows.append((int(moment.timestamp() * 1000), tp.partition, message.offset,
                                 [value.get(column) for column, _, _ in columns]))
                if messages and messages[-1].offset >= ends[tp] - 1:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    rows.sort(key=lambda row: (row[1], row[2]))
    return Dataset(name, "STREAM", topic, columns, lambda: iter(rows), len({r[1] for r in rows}), count=len(rows))


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()  # noqa: SLF001 - a fresh consumer has no metadata yet
    return consumer.partitions_for_topic(topic) or set()
