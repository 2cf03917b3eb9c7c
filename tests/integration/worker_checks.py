"""What the edge-case tests do to and read from a running deployment: produce records as they are,
read the dead-letter topic, scrape the worker's metrics, run ``txlake verify``."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterable, Sequence
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.ops.progress import wait_until_landed
from models.transaction import Transaction, to_wire
from tests.integration.harness import TXLAKE, Deployment

__all__ = [
    "dead_letter_offsets",
    "metric_value",
    "produce_raw",
    "produce_transactions",
    "run_verify",
    "wait_landed",
    "wait_until",
]


async def produce_transactions(deployment: Deployment, transactions: Iterable[Transaction]) -> None:
    """Each transaction to the transactions topic as ksqlDB would write it (key: its id)."""
    await produce_raw(
        deployment, deployment.feed("transaction_stream").topic,
        [(tx.transaction_id.encode(), to_wire(tx), ()) for tx in transactions],
    )


async def produce_raw(
    deployment: Deployment, topic: str, messages: Sequence[tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes]]]],
    partition: int | None = None,
) -> None:
    """``(key, value, headers)`` messages to ``topic``, in order, each acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=deployment.settings.kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for key, value, headers in messages:
            await producer.send_and_wait(topic, value, key=key, headers=list(headers) or None, partition=partition)
    finally:
        await producer.stop()


async def wait_landed(deployment: Deployment, timeout_s: float = 240) -> None:
    """Everything produced has landed (twice: the table agent may still write after the first pass)."""
    for _ in range(2):
        await wait_until_landed(deployment.settings, deployment.feeds, timeout_s)


async def dead_letter_offsets(deployment: Deployment) -> dict[tuple[str, int], list[int]]:
    """The dead-letter topic's records as ``{(source topic, partition): [source offsets]}``."""
    topic = deployment.settings.dead_letter_topic
    consumer = AIOKafkaConsumer(bootstrap_servers=deployment.settings.kafka.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()  # noqa: SLF001 - partitions_for_topic needs fresh metadata
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        ends = await consumer.end_offsets(partitions) if partitions else {}
        found: dict[tuple[str, int], list[int]] = {}
        if not any(ends.values()):
            return found
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        remaining = sum(ends.values())
        while remaining > 0:
            for messages in (await consumer.getmany(timeout_ms=5000)).values():
                remaining -= len(messages)
                for message in messages:
                    headers = {k: v.decode() for k, v in message.headers}
                    where = (headers["__connect.errors.topic"], int(headers["__connect.errors.partition"]))
                    found.setdefault(where, []).append(int(headers["__connect.errors.offset"]))
        return found
    finally:
        await consumer.stop()


async def metric_value(deployment: Deployment, name: str, **labels: str) -> float | None:
    """A sample of the worker's ``/metrics`` (None while the worker does not answer or lacks it)."""
    url = f"http://127.0.0.1:{deployment.env['TXLAKE_WEB__PORT']}/metrics"
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            text = (await client.get(url)).text
    except httpx.HTTPError:
        return None
    wanted = {f'{k}="{v}"' for k, v in labels.items()}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            sample, _, value = line.rpartition(" ")
            inside = sample[len(name):].strip("{}")
            if wanted <= set(inside.split(",")) if inside else not wanted:
                return float(value)
    return None


async def wait_until(check: Any, what: str, timeout_s: float = 180, log: Any = None) -> Any:
    """Poll the coroutine function ``check`` until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f"\n{log()[-4000:]}" if log else ""))
        await asyncio.sleep(0.5)


def run_verify(deployment: Deployment, *flags: str) -> tuple[int, dict[str, Any]]:
    """``txlake verify --json`` as the deployment's worker is configured: (exit code, report)."""
    env = deployment.workers[0].env if deployment.workers else None
    assert env is not None, "create a worker first (deployment.worker()): verify uses its environment"
    done = subprocess.run([TXLAKE, "verify", "--json", *flags], env=env, capture_output=True, timeout=300)
    assert done.stdout, done.stderr.decode()[-3000:]
    return done.returncode, json.loads(done.stdout)


def feed_report(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in report["feeds"] if f["feed"] == name)
