"""The table path's benchmark: throughput of the derivation, and produce-to-MySQL latency.

    python -m bench.tables [--backlog 100000] [--rate 5000] [--seconds 60] [--window-ms 1000]

1. **Throughput.** Fill the four stream topics with ``--backlog`` transactions, start one worker
   (table derivation on, batch window ``--window-ms``), and time until everything landed: the
   streams in the lake, the deltas folded by the table agent, the four table topics in MySQL.
2. **Latency.** With that worker running, produce a steady ``--rate`` transactions/s for
   ``--seconds`` (all four stream topics, as the demo producer writes them) and, every 100 ms, one
   *marker* transaction of a new user. A marker is visible when its row appears in
   ``fact_user_transaction_summary`` (polled every 10 ms): latency = first seen - sent.

Writes ``bench/results/tables-LATEST.{json,md}`` and ``LATEST.md`` (:mod:`bench.report`) and prints
the page. Uses the services ``make up`` starts, in its own topics, consumer groups and database.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.infra import (
    REPO,
    WorkerProcess,
    create_database,
    delete_topics,
    drop_database,
    git_state,
    log,
    machine_info,
    new_run,
)
from bench.probes import RssSampler
from bench.report import write_latest

MARKER_EVERY_S = 0.1
POLL_S = 0.01
NOW = datetime.now(UTC)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.tables", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlog", type=int, default=100_000, help="transactions for the throughput phase")
    parser.add_argument("--rate", type=float, default=5000.0, help="steady transactions/s for the latency phase")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the latency phase")
    parser.add_argument("--window-ms", type=int, default=1000, help="batching.rotate_interval_ms of the worker")
    parser.add_argument("--partitions", type=int, default=4)
    return parser.parse_args(argv)


async def _wait_landed(settings: Any, feeds: tuple, timeout_s: float) -> None:
    from app.ops.progress import wait_until_landed

    for _ in range(2):  # the second pass covers table changes written while the first one polled
        await wait_until_landed(settings, feeds, timeout_s, poll_s=0.25)


async def _throughput(settings: Any, feeds: tuple, args: argparse.Namespace, env: dict[str, str]) -> tuple[dict, Any]:
    from app.ops.topics import create_topics
    from tools.loadgen import produce

    await create_topics(settings, feeds, args.partitions)
    topics = _stream_topics(feeds)
    started = time.monotonic()
    report = await produce(
        settings.kafka.bootstrap_servers, topics, args.backlog, seed=1, rate=None,
        anonymization_key=settings.anonymization.key.get_secret_value().encode(), blacklist=settings.blacklist, now=NOW,
        derived=not settings.derives_streams,  # with streams.derive the worker writes the derived streams
    )
    log(f"  filled {args.backlog:,} transactions ({sum(report.counts.values()):,} messages) in {time.monotonic() - started:.1f}s")
    worker = WorkerProcess(env, Path(env["TXLAKE_DATADIR"]).parent / "worker.log").start()
    sampler = RssSampler(worker.process.pid)
    sampler.start()
    started = time.monotonic()
    await _wait_landed(settings, feeds, timeout_s=1800)
    elapsed = time.monotonic() - started
    sampler.stop()
    result = {
        "transactions": args.backlog,
        "messages": sum(report.counts.values()),
        "drain_s": elapsed,
        "transactions_per_s": args.backlog / elapsed,
        "messages_per_s": sum(report.counts.values()) / elapsed,
        "peak_rss_mb": max((kb for _, kb in sampler.samples), default=0) / 1024,
    }
    return result, worker


async def _latency(settings: Any, feeds: tuple, args: argparse.Namespace, worker: Any) -> dict:
    import aiomysql
    from aiokafka import AIOKafkaProducer

    from models.transaction import to_wire
    from tools.loadgen import generate, produce

    topics = _stream_topics(feeds)
    template = next(tx for tx in generate(50, seed=9, now=NOW) if tx.status == "COMPLETED")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all", linger_ms=0)
    await producer.start()
    s = settings.mysql
    connection = await aiomysql.connect(
        host=s.host, port=s.port, user=s.user, password=s.password.get_secret_value(), db=s.database, autocommit=True
    )
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    load = asyncio.create_task(produce(
        settings.kafka.bootstrap_servers, topics, int(args.rate * args.seconds), seed=2, rate=args.rate,
        anonymization_key=settings.anonymization.key.get_secret_value().encode(), blacklist=settings.blacklist, now=NOW,
        derived=not settings.derives_streams,  # with streams.derive the worker writes the derived streams
    ))

    async def markers() -> None:
        n = 0
        while not load.done():
            n += 1
            user = f"LAT-{n:06d}"
            tx = template.model_copy(update={
                "transaction_id": f"LAT-TX-{n}", "user": template.user.model_copy(update={"id": user}),
                "event_timestamp": datetime.now(UTC),
            })
            sent[user] = time.monotonic()
            await producer.send(topics.transactions, to_wire(tx), key=tx.transaction_id.encode())
            await asyncio.sleep(MARKER_EVERY_S)

    async def watch() -> None:
        async with connection.cursor() as cursor:
            while not load.done() or len(seen) < len(sent):
                await cursor.execute(
                    "SELECT user_id FROM fact_user_transaction_summary WHERE user_id LIKE 'LAT-%%' AND snapshot_version = 0"
                )
                now = time.monotonic()
                for (user,) in await cursor.fetchall():
                    seen.setdefault(user, now)
                if load.done() and now - max(sent.values(), default=now) > 60:
                    break
                await asyncio.sleep(POLL_S)

    sampler = RssSampler(worker.process.pid)
    sampler.start()
    try:
        await asyncio.gather(markers(), watch(), load)
    finally:
        sampler.stop()
        await producer.stop()
        connection.close()
    latencies = sorted(seen[u] - sent[u] for u in seen if u in sent)
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [float("nan")] * 99
    return {
        "rate_tx_per_s": args.rate,
        "seconds": args.seconds,
        "markers_sent": len(sent),
        "markers_seen": len(latencies),
        "p50_s": cuts[49],
        "p90_s": cuts[89],
        "p99_s": cuts[98],
        "max_s": latencies[-1] if latencies else None,
        "peak_rss_mb": max((kb for _, kb in sampler.samples), default=0) / 1024,
    }


def _stream_topics(feeds: tuple) -> Any:
    from tools.loadgen import StreamTopics

    by_name = {feed.name: feed.topic for feed in feeds}
    return StreamTopics(
        transactions=by_name["transaction_stream"],
        flattened=by_name["transaction_flattened"],
        anonymized=by_name["transaction_stream_anonymized"],
        blacklisted=by_name["transaction_stream_blacklisted"],
    )


def markdown(results: dict[str, Any]) -> str:
    t, lat, m = results["throughput"], results["latency"], results["machine"]
    return "\n".join([
        "# Table path (`make bench-tables`)",
        "",
        f"Table path, measured {results['date_utc']} on {m['nproc']} vCPU / {m['memory_gib']} GiB "
        f"({m['cpu_model']}); broker, MariaDB and worker on the same machine; batch window {results['window_ms']} ms.",
        "",
        "| measure | result | target |",
        "|---|---|---|",
        f"| backlog of {t['transactions']:,} transactions ({t['messages']:,} messages) through streams **and** tables "
        f"| {t['drain_s']:.1f} s = {t['transactions_per_s']:,.0f} transactions/s ({t['messages_per_s']:,.0f} msg/s), "
        f"peak RSS {t['peak_rss_mb']:.0f} MB | - |",
        f"| produce → visible in MySQL at a steady {lat['rate_tx_per_s']:,.0f} transactions/s, p50 | {lat['p50_s']:.2f} s | - |",
        f"| same, p99 ({lat['markers_seen']} of {lat['markers_sent']} markers seen) | {lat['p99_s']:.2f} s | ≤ 2 s |",
        f"| same, max | {lat['max_s']:.2f} s | - |",
    ])


async def _amain(args: argparse.Namespace) -> dict[str, Any]:
    from app.core.feeds import load_feeds
    from app.core.settings import Settings

    run = new_run(args.window_ms)
    run.env["TXLAKE_TABLES__DERIVE"] = "true"  # new_run turns it off for the stream benchmark
    os.environ.update(run.env)
    settings = Settings()
    feeds = load_feeds(settings)
    results: dict[str, Any] = {
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        "git": git_state(),
        "window_ms": args.window_ms,
        "args": vars(args),
    }
    await create_database(run.database, settings.mysql.user)
    worker = None
    try:
        log(f"1/2 throughput: {args.backlog:,} transactions, window {args.window_ms} ms")
        results["throughput"], worker = await _throughput(settings, feeds, args, {**os.environ, **run.env})
        t = results["throughput"]
        log(f"  landed in {t['drain_s']:.1f}s = {t['transactions_per_s']:,.0f} transactions/s")
        log(f"2/2 latency: {args.rate:,.0f} transactions/s for {args.seconds:.0f}s")
        results["latency"] = await _latency(settings, feeds, args, worker)
        lat = results["latency"]
        log(f"  p50 {lat['p50_s']:.3f}s p99 {lat['p99_s']:.3f}s max {lat['max_s']:.3f}s ({lat['markers_seen']} markers)")
    finally:
        if worker is not None:
            worker.stop()
        from app.tables.state import state_table_names

        topics = [f.topic for f in feeds] + [settings.dead_letter_topic, settings.table_deltas_topic]
        topics += [f"{settings.faust_app_id}-{name}-changelog" for name in state_table_names()]
        await delete_topics(settings.kafka.bootstrap_servers, topics)
        await drop_database(run.database, settings.mysql.user)
        shutil.rmtree(run.scratch, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.chdir(REPO)
    results = asyncio.run(_amain(args))
    print(markdown(results))
    raw, page = write_latest("tables", results, markdown(results))
    log(f"results: {raw.relative_to(REPO)}, {page.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
