"""The table path's benchmark: the derivation's throughput and CPU, and produce-to-MySQL latency.

    python -m bench.tables [--transactions 200000] [--pipeline-transactions 100000] [--cases realistic,demo]
                           [--reference-tree DIR] [--sensors-ab] [--rate 5000] [--seconds 60] [--window-ms 1000]

Two key cardinalities (``--cases``): ``realistic`` = 100,000 users and 10,000 products,
``demo`` = the demo's 500 users and 50 products (which flatter any per-key cache).

1. **Derivation alone.** The delta messages of ``--transactions`` transactions are encoded as the
   delta sink sends them (source batches of 1,000 per partition). A process starts on an empty deltas
   topic: the table agent alone (``agent``: what a tables-only process runs; repeated ``--repeat``
   times from scratch, the best kept) or a whole ``txlake worker`` (``worker``: it also lands the
   table topics in MySQL meanwhile; the stream topics are empty). Once it holds the deltas
   partitions, the messages are sent; measured from the first one sent until the derivation
   committed the last (a commit follows the broker's acknowledgement of the changelog and table
   records it covers): transactions/s and the process's CPU time from ``/proc`` per transaction,
   start-up left out. The table topics are then read back and compared with an independent
   computation (``--restore`` also times a second agent's restore of the derived state).
2. **Whole pipeline, backlog.** ``--pipeline-transactions`` transactions in the four stream topics;
   one worker lands streams and tables; time and CPU until everything is in the lake and MySQL (the
   earlier version of this benchmark measured only this).
3. **Latency.** A fresh deployment and worker; a steady ``--rate`` transactions/s for ``--seconds``
   (all four stream topics, as the demo producer writes them) with, every 100 ms, one *marker*
   transaction of a new user. A marker is visible when its row appears in
   ``fact_user_transaction_summary`` (polled every 10 ms): latency = first seen - sent.

With ``--reference-tree DIR`` (an export of another commit, e.g. the base branch; its ``.commit``
file names it) phases 1 (whole worker) and 2 are repeated back to back with that tree's worker code: on a shared
machine the ratios, measured minutes apart, are the result, not the absolute figures.
``--sensors-ab`` repeats phase 1 of the current code with Faust's sensors off.

Writes ``bench/results/tables-LATEST.{json,md}`` and ``LATEST.md`` (:mod:`bench.report`) after every run.
Uses the services ``make up`` starts, in its own topics, consumer groups and databases.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.infra import (
    REPO,
    create_database,
    delete_topics,
    drop_database,
    git_state,
    log,
    machine_info,
    new_run,
    stream_topics,
    wait_for_leaders,
)
from bench.probes import RssSampler, proc_cpu_s, proc_status, summarise_profile
from bench.report import write_latest

MARKER_EVERY_S = 0.1
POLL_S = 0.01
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Case:
    """A key cardinality of the load."""

    name: str
    users: int
    products: int


NEWER_SETTINGS = ("TXLAKE_LAKE__COMPACTION__ENABLED",)
"""Variables of the shared run environment (:mod:`bench.infra`) that a reference tree from before
compaction does not know; it has no compaction to turn off."""

MODES = {"agent": "agent alone", "worker": "whole worker"}
CASES = {"realistic": Case("realistic", 100_000, 10_000), "demo": Case("demo", 500, 50)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.tables", description=__doc__.split("\n\n")[0])
    parser.add_argument("--transactions", type=int, default=200_000, help="transactions of the derivation runs")
    parser.add_argument("--cases", default="realistic,demo", help="key cardinalities: realistic, demo (comma-separated)")
    parser.add_argument("--reference-tree", type=Path, default=None,
                        help="a checkout of another commit whose worker is measured back to back (derivation)")
    parser.add_argument("--reference-transactions", type=int, default=10_000,
                        help="transactions of the reference tree's derivation runs (its Faust producer buffer makes a "
                        "large backlog take very long; per-transaction figures are compared)")
    parser.add_argument("--sensors-ab", action="store_true", help="also run the derivation with Faust's sensors off")
    parser.add_argument("--rate", type=float, default=5000.0, help="steady transactions/s of the latency runs")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each latency run")
    parser.add_argument("--window-ms", type=int, default=1000, help="batching.rotate_interval_ms of the worker")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--pipeline-transactions", type=int, default=100_000,
                        help="transactions of the whole-pipeline backlog runs (0: skip them)")
    parser.add_argument("--reference-pipeline-transactions", type=int, default=10_000,
                        help="transactions of the reference tree's whole-pipeline runs")
    parser.add_argument("--repeat", type=int, default=3,
                        help="repetitions of the agent-alone derivation (fresh state each; the best is reported)")
    parser.add_argument("--restore", action="store_true",
                        help="after the agent-alone run, start the agent again and time its restore of the state")
    parser.add_argument("--skip-derivation", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--profile", action="store_true",
                        help="record the current code's derivation with py-spy (perturbs it; needs py-spy in .venv)")
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy each run's worker log into this directory")
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up a derivation run after this (s)")
    return parser.parse_args(argv)


# -- deployments ------------------------------------------------------------------------------


class Deployment:
    """One isolated run: topics, groups, database and scratch of its own; removed by :meth:`close`."""

    def __init__(self, window_ms: int, extra_env: dict[str, str] | None = None, keep_logs: Path | None = None) -> None:
        from app.core.feeds import load_feeds
        from tools.env_settings import settings_from_env

        self.run = new_run(window_ms)
        self.env = {**self.run.env, "TXLAKE_TABLES__DERIVE": "true", **(extra_env or {})}
        self.settings = settings_from_env(self.env)
        self.feeds = load_feeds(self.settings)
        self.keep_logs = keep_logs
        self.timeout_s = 1800.0

    async def open(self, partitions: int) -> None:
        from app.ops.topics import create_topics
        await create_database(self.run.database, self.settings.mysql.user)
        created = await create_topics(self.settings, self.feeds, partitions)
        await wait_for_leaders(self.settings.kafka.bootstrap_servers, created, partitions)

    async def close(self) -> None:
        from app.tables.state import state_table_names

        if self.keep_logs is not None:
            self.keep_logs.mkdir(parents=True, exist_ok=True)
            for log_file in self.run.scratch.glob("*.log"):
                shutil.copy(log_file, self.keep_logs / f"{self.run.run_id}-{log_file.name}")

        s = self.settings
        topics = [f.topic for f in self.feeds] + [s.dead_letter_topic, s.table_deltas_topic]
        topics += [f"{s.faust_app_id}-{name}-changelog" for name in state_table_names()]
        try:
            await delete_topics(s.kafka.bootstrap_servers, topics)
        finally:
            await drop_database(self.run.database, s.mysql.user)
            shutil.rmtree(self.run.scratch, ignore_errors=True)

    def start_worker(
        self, tree: Path | None, log_name: str, *, agent_only: bool = False, env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        """``txlake worker`` of this checkout, or of ``tree`` (its code first on the path); with
        ``agent_only`` a process that runs the table agent alone (:func:`run_agent`); ``env`` overrides."""
        env = {**os.environ, **self.env, **(env or {})}
        cwd = self.run.scratch
        if agent_only:
            command = [sys.executable, "-c", "from bench.tables import run_agent; run_agent()"]
            env["PYTHONPATH"] = str(REPO)
        elif tree is None:
            command = [str(Path(sys.executable).parent / "txlake"), "worker"]
        else:
            command = [sys.executable, "-c", "import sys; from app.ops.cli import main; sys.exit(main())", "worker"]
            env["PYTHONPATH"] = str(tree)
            for name in NEWER_SETTINGS:  # an older tree's settings refuse names they do not know
                env.pop(name, None)
        with open(self.run.scratch / log_name, "wb") as out:
            return subprocess.Popen(command, env=env, cwd=str(cwd), stdout=out, stderr=subprocess.STDOUT)

    def table_feeds(self) -> tuple:
        return tuple(feed for feed in self.feeds if feed.is_table)


def stop_worker(worker: subprocess.Popen) -> int | None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            return worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
            return worker.wait(10)
    return worker.returncode


# -- 1. derivation ----------------------------------------------------------------------------


def encode_deltas(transactions: list, partitions: int, flush_size: int) -> list[tuple[int, bytes]]:
    """``(deltas partition, value)`` of ``transactions`` as the delta sink sends them: each source
    partition's transactions in batches of ``flush_size``, the source partitions' batches interleaved."""
    from aiokafka.partitioner import murmur2

    from app.tables.deltas import delta_messages
    from app.tables.rates import load_rates

    rates = load_rates()
    by_source: dict[int, list] = {p: [] for p in range(partitions)}
    for tx in transactions:  # the partition the demo producer's key (the transaction id) goes to
        by_source[(murmur2(tx.transaction_id.encode()) & 0x7FFFFFFF) % partitions].append(tx)
    messages = []
    for start in range(0, max(len(records) for records in by_source.values()), flush_size):
        for source, records in by_source.items():
            chunk = records[start:start + flush_size]
            if chunk:
                messages += delta_messages(chunk, range(start, start + len(chunk)), source, rates, partitions)
    return messages


async def send_deltas(settings: Any, messages: list[tuple[int, bytes]]) -> dict[int, int]:
    """Produce the delta messages; returns the deltas topic's end offsets."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all",
                                enable_idempotence=True, linger_ms=20, max_request_size=4 * 1024 * 1024)
    await producer.start()
    ends: dict[int, int] = {}
    try:
        deliveries = [await producer.send(settings.table_deltas_topic, value, partition=p) for p, value in messages]
        for delivery in deliveries:
            metadata = await delivery
            ends[metadata.partition] = max(ends.get(metadata.partition, 0), metadata.offset + 1)
    finally:
        await producer.stop()
    return ends


async def _committed(admin: Any, groups: list[str], topic: str) -> dict[int, int]:
    """The highest committed offset per partition of ``topic`` over ``groups``."""
    found: dict[int, int] = {}
    for group in groups:
        try:
            offsets = await admin.list_consumer_group_offsets(group)
        except Exception:  # noqa: BLE001, S112 - the group does not exist yet
            continue
        for tp, meta in offsets.items():
            if tp.topic == topic:
                found[tp.partition] = max(found.get(tp.partition, -1), meta.offset)
    return found


async def derivation_run(
    case: Case, transactions: list, args: argparse.Namespace, *, code: str, tree: Path | None, mode: str,
    extra_env: dict[str, str] | None = None, profile: bool = False,
) -> dict[str, Any]:
    """One derivation run (see the module docstring); ``code`` names the code measured, ``mode`` is
    ``agent`` (the table agent alone in its process) or ``worker`` (a whole worker). In ``agent`` mode
    the run is repeated ``--repeat`` times from scratch (a fresh deployment each time); the best
    repetition is reported, all are kept."""
    from tests.tables_oracle import assert_tables_match, expected_tables

    label = f"{code}/{mode}"
    started = time.monotonic()
    messages = encode_deltas(transactions, args.partitions, 1000)
    log(f"  [{label}] {len(transactions):,} transactions -> {len(messages):,} delta messages "
        f"({sum(len(v) for _, v in messages) / 1e6:.0f} MB) in {time.monotonic() - started:.1f} s")
    repeats: list[dict[str, Any]] = []
    restore = None
    match = None
    table_records = 0
    for repeat in range(args.repeat if mode == "agent" else 1):
        deployment = Deployment(args.window_ms, extra_env, args.keep_logs)
        deployment.timeout_s = args.timeout
        await deployment.open(args.partitions)
        try:
            measured = await _measure_derivation(deployment, messages, len(transactions), tree=tree, mode=mode,
                                                 profile=profile and repeat == 0)
            repeats.append(measured)
            w = measured["first_to_last_commit"] or {}
            log(f"  [{label}] #{repeat + 1}: {measured['tx_per_s']:,.0f} tx/s, {measured['cpu_us_per_tx']:.0f} CPU-µs/tx "
                f"from the first delta sent (first to last commit {w.get('tx_per_s', float('nan')):,.0f} tx/s, "
                f"{w.get('cpu_us_per_tx', float('nan')):.0f} CPU-µs/tx); peak RSS {measured['peak_rss_mb']:.0f} MB "
                f"[load {measured['loadavg']}]")
            if repeat == 0:
                if mode == "agent" and args.restore:
                    restore = await _restore_run(deployment)
                table_records, derived = await _table_topics(deployment.settings, deployment.table_feeds())
                try:
                    assert_tables_match(derived, expected_tables(transactions))
                    match = True
                except AssertionError as exc:
                    match = False
                    log(f"  [{label}] TABLES DIFFER from the independent computation: {str(exc)[:300]}")
        finally:
            await deployment.close()
    best = min(repeats, key=lambda r: r["cpu_us_per_tx"])
    result = {
        "code": code,
        "mode": mode,
        "case": case.name,
        "users": case.users,
        "products": case.products,
        "transactions": len(transactions),
        "delta_messages": len(messages),
        **{k: v for k, v in best.items() if k != "profile"},
        "repeats": [{k: v for k, v in r.items() if k != "profile"} for r in repeats],
        "restore": restore,
        "table_topic_records": table_records,
        "tables_match_independent_computation": match,
        "env": extra_env or {},
    }
    if repeats[0].get("profile"):
        result["profile"] = repeats[0]["profile"]
    if len(repeats) > 1:
        log(f"  [{label}] best of {len(repeats)}: {best['cpu_us_per_tx']:.0f} CPU-µs/tx, {best['tx_per_s']:,.0f} tx/s")
    return result


async def _measure_derivation(
    deployment: Deployment, messages: list[tuple[int, bytes]], transactions: int, *, tree: Path | None, mode: str,
    profile: bool,
) -> dict[str, Any]:
    """Start the process on an empty deltas topic; once its consumer has the deltas partitions and it
    has settled, send the delta messages and follow the derivation's commits until all are covered.
    CPU and time count from the first delta sent: the process's start-up is left out."""
    from aiokafka.admin import AIOKafkaAdminClient

    settings = deployment.settings
    log_path = deployment.run.scratch / "worker.log"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    worker = deployment.start_worker(tree, "worker.log", agent_only=mode == "agent")
    timeline: list[tuple[float, int, float]] = []  # (s since the first delta sent, deltas committed, process CPU s)
    profiler = None
    profile_raw = deployment.run.scratch / "profile.raw"
    groups = [settings.table_group_id, settings.faust_app_id]  # this code's group, the Faust agent's
    try:
        ready_by = time.monotonic() + 300
        while not any("newly assigned partitions" in line and settings.table_deltas_topic in line
                      for line in log_path.read_text(errors="replace").splitlines()):
            if worker.poll() is not None or time.monotonic() > ready_by:
                raise RuntimeError(f"process never got the deltas partitions ({worker.poll()}):\n"
                                   + log_path.read_text(errors="replace")[-3000:])
            await asyncio.sleep(0.25)
        await asyncio.sleep(3)  # restore of the (empty) state, the rest of the start-up
        cpu0, t0 = proc_cpu_s(worker.pid) or 0.0, time.monotonic()
        sending = asyncio.create_task(send_deltas(settings, messages))
        total = None
        while True:
            if worker.poll() is not None:
                raise RuntimeError(f"process exited ({worker.returncode}):\n" + log_path.read_text(errors="replace")[-3000:])
            now = time.monotonic() - t0
            if now > deployment.timeout_s:
                raise TimeoutError(f"derivation not done after {now:.0f} s")
            if total is None and sending.done():
                ends = sending.result()
                total = sum(ends.values())
            committed = await _committed(admin, groups, settings.table_deltas_topic)
            done = sum(max(offset, 0) for offset in committed.values())
            timeline.append((round(now, 3), done, (proc_cpu_s(worker.pid) or 0.0) - cpu0))
            if profile and profiler is None and done > 0:
                profiler = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw",
                                             "-r", "50", "-p", str(worker.pid), "-o", str(profile_raw)],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if total is not None and done >= total:
                break
            await asyncio.sleep(0.25)
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(60)
        peak_kb = proc_status(worker.pid, "VmHWM")
    finally:
        exit_code = stop_worker(worker)
        await admin.close()
    first = next(row for row in timeline if row[1] > 0)
    last = timeline[-1]
    window = None
    if last[0] > first[0]:
        covered = (total - first[1]) / total * transactions  # transactions are spread evenly over the delta messages
        window = {"seconds": last[0] - first[0], "transactions": covered, "tx_per_s": covered / (last[0] - first[0]),
                  "cpu_us_per_tx": (last[2] - first[2]) / covered * 1e6}
    measured = {
        "derived_s": last[0],
        "tx_per_s": transactions / last[0],
        "cpu_s": last[2],
        "cpu_us_per_tx": last[2] / transactions * 1e6,
        "cpu_cores": last[2] / last[0],
        "first_to_last_commit": window,
        "peak_rss_mb": (peak_kb or 0) / 1024,
        "worker_exit_code": exit_code,
        "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }
    if profile and profile_raw.exists():
        measured["profile"] = summarise_profile(profile_raw)
    return measured


async def _restore_run(deployment: Deployment) -> dict[str, Any]:
    """Start the table agent again on the derived state and time its restore of every partition."""
    import re

    log_path = deployment.run.scratch / "restore.log"
    started = time.monotonic()
    agent = deployment.start_worker(None, "restore.log", agent_only=True)
    pattern = re.compile(r"partition (\d+) restored: (\d+) records, (\d+) keys .*?, ([\d.]+) s")
    found: dict[str, tuple[int, int, float]] = {}
    try:
        while len(found) < 4 and time.monotonic() - started < 600 and agent.poll() is None:
            await asyncio.sleep(0.5)
            for match in pattern.finditer(log_path.read_text(errors="replace")):
                found[match[1]] = (int(match[2]), int(match[3]), float(match[4]))
        peak_kb = proc_status(agent.pid, "VmHWM")
    finally:
        stop_worker(agent)
    records = sum(r for r, _, _ in found.values())
    slowest = max((s for _, _, s in found.values()), default=None)
    result = {"partitions": len(found), "records": records, "keys": sum(k for _, k, _ in found.values()),
              "slowest_partition_s": slowest, "records_per_s": records / slowest if slowest else None,
              "process_start_to_restored_s": time.monotonic() - started, "peak_rss_mb": (peak_kb or 0) / 1024}
    log(f"  restore: {records:,} changelog records, {result['keys']:,} keys in {slowest} s (partitions in parallel)")
    return result


async def _table_topics(settings: Any, feeds: tuple) -> tuple[int, dict[str, dict[tuple, tuple]]]:
    """The records in the table topics, and the tables they hold (last value per key), shaped like
    ``tests.integration.test_tables.landed_tables`` (measures as the fact table's DECIMAL columns hold them)."""
    from decimal import Decimal

    from aiokafka import AIOKafkaConsumer

    from app.ops.kafka_positions import read_positions
    from models.tables import decode_row

    def dec(value: Decimal | float | None, places: int) -> Decimal | None:
        return None if value is None else Decimal(str(value)).quantize(Decimal(1).scaleb(-places))

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    records, tables = 0, {}
    try:
        for feed in feeds:
            spec = feed.table_spec
            tps = list((await read_positions(settings, [feed.topic])).last_offset)
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            await consumer.seek_to_beginning(*tps)
            rows: dict[tuple, Any] = {}
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                for messages in (await consumer.getmany(timeout_ms=1000, max_records=10_000)).values():
                    for message in messages:
                        row = decode_row(spec, message.key, message.value)
                        rows[row.key] = row.value
                        records += 1
            if spec.name == "user_transaction_summary":
                shaped = {k: (dec(v.total_amount, 2), v.transaction_count, dec(v.avg_amount, 4)) for k, v in rows.items()}
            elif spec.name == "user_transaction_summary_eur":
                shaped = {k: (dec(v.total_amount_eur, 2), v.transaction_count, dec(v.avg_amount_eur, 4),
                              dec(v.exchange_rate, 8)) for k, v in rows.items()}
            elif spec.name == "payment_method_totals":
                shaped = {k: (dec(v.total_amount, 2), v.transaction_count, dec(v.avg_amount, 4)) for k, v in rows.items()}
            else:
                shaped = {k: (v.purchase_count, dec(v.total_revenue, 2), dec(v.avg_price, 4), v.unique_buyers)
                          for k, v in rows.items()}
            tables[spec.name] = shaped
    finally:
        await consumer.stop()
    return records, tables


def run_agent() -> None:
    """The ``agent`` mode's process: the table agent alone (what a tables-only process runs), until SIGTERM."""
    import logging

    from agents.tables import TableAgent
    from app.core.feeds import load_feeds
    from app.core.settings import Settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings()
    agent = TableAgent(settings, {feed.table: feed.topic for feed in load_feeds(settings) if feed.table})

    async def main() -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(agent.stop()))
        await agent.run()

    asyncio.run(main())


async def pipeline_run(
    case: Case, args: argparse.Namespace, *, code: str, tree: Path | None, transactions: int
) -> dict[str, Any]:
    """A backlog of transactions through streams *and* tables in one worker (the earlier benchmark's phase 1)."""
    from aiokafka.admin import AIOKafkaAdminClient

    from app.ops.progress import feed_progress
    from tools.loadgen import produce

    deployment = Deployment(args.window_ms, keep_logs=args.keep_logs)
    await deployment.open(args.partitions)
    settings = deployment.settings
    try:
        report = await produce(
            settings.kafka.bootstrap_servers, stream_topics(deployment.feeds), transactions, seed=1,
            anonymization_key=settings.anonymization.key.get_secret_value().encode(), blacklist=settings.blacklist,
            now=NOW, users=case.users, products=case.products,
            # this code derives the three streams itself (streams.derive); a reference tree may not
            derived=tree is not None or not settings.derives_streams,
        )
        messages = sum(report.counts.values())
        log(f"  [{code}] {transactions:,} transactions = {messages:,} messages produced in {report.elapsed_s:.1f} s")
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
        await admin.start()
        worker = deployment.start_worker(tree, "worker.log")
        t0 = time.monotonic()
        groups = [settings.table_group_id, settings.faust_app_id]
        try:
            while True:
                if worker.poll() is not None:
                    raise RuntimeError(f"worker exited ({worker.returncode})")
                if time.monotonic() - t0 > args.timeout:
                    raise TimeoutError(f"pipeline not landed after {args.timeout:.0f} s")
                # every sink of every feed (the delta sink included) holds Kafka's end, the derivation
                # committed every delta message (in either code's group), and then -- the last flush may
                # have extended them -- the table feeds hold their topics' ends
                rows = await feed_progress(settings, deployment.feeds)
                feeds_done = all(row.landed for row in rows if row.feed != "table_deltas")
                deltas_end = {row.partition: row.last_offset + 1 for row in rows if row.feed == "table_deltas"}
                committed = await _committed(admin, groups, settings.table_deltas_topic) if feeds_done else {}
                if feeds_done and all(committed.get(p, 0) >= end for p, end in deltas_end.items()):
                    rows = await feed_progress(settings, deployment.table_feeds())
                    if all(row.landed for row in rows):
                        break
                await asyncio.sleep(0.5)
            elapsed = time.monotonic() - t0
            cpu_s = proc_cpu_s(worker.pid) or 0.0
            peak_kb = proc_status(worker.pid, "VmHWM")
        finally:
            exit_code = stop_worker(worker)
            await admin.close()
        n = transactions
        result = {
            "code": code, "case": case.name, "users": case.users, "products": case.products, "transactions": n,
            "messages": messages, "landed_s": elapsed, "tx_per_s": n / elapsed, "cpu_us_per_tx": cpu_s / n * 1e6,
            "peak_rss_mb": (peak_kb or 0) / 1024, "worker_exit_code": exit_code,
        }
        log(f"  [{code}] streams and tables landed in {elapsed:.1f} s = {result['tx_per_s']:,.0f} tx/s, "
            f"{result['cpu_us_per_tx']:.0f} CPU-µs/tx (start-up included); peak RSS {result['peak_rss_mb']:.0f} MB")
        return result
    finally:
        await deployment.close()


# -- 3. latency -------------------------------------------------------------------------------


async def latency_run(case: Case, args: argparse.Namespace, *, code: str, tree: Path | None) -> dict[str, Any]:
    import aiomysql
    import httpx
    from aiokafka import AIOKafkaProducer

    from models.transaction import to_wire
    from tools.loadgen import generate, produce

    deployment = Deployment(args.window_ms, keep_logs=args.keep_logs)
    await deployment.open(args.partitions)
    settings = deployment.settings
    topics = stream_topics(deployment.feeds)
    template = next(tx for tx in generate(50, seed=9, now=NOW) if tx.status == "COMPLETED")
    try:
        worker = deployment.start_worker(tree, "worker.log")
        async with httpx.AsyncClient() as client:  # ready: the worker answers and has its partitions
            for _ in range(240):
                try:
                    if (await client.get(f"http://127.0.0.1:{settings.web.port}/readyz", timeout=2)).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.25)
        await asyncio.sleep(2)
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all", linger_ms=0)
        await producer.start()
        s = settings.mysql
        connection = await aiomysql.connect(host=s.host, port=s.port, user=s.user, password=s.password.get_secret_value(),
                                            db=s.database, autocommit=True)
        sent: dict[str, float] = {}
        sent_wall: dict[str, float] = {}  # for the Kafka record timestamps of the hops
        seen: dict[str, float] = {}
        cpu_start, t_start = proc_cpu_s(worker.pid) or 0.0, time.monotonic()
        count = int(args.rate * args.seconds)
        load = asyncio.create_task(produce(
            settings.kafka.bootstrap_servers, topics, count, seed=2, rate=args.rate,
            anonymization_key=settings.anonymization.key.get_secret_value().encode(), blacklist=settings.blacklist,
            now=NOW, users=case.users, products=case.products, derived=not settings.derives_streams,
        ))
        load_cpu: list[float] = []

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
                sent_wall[user] = time.time()
                await producer.send(topics.transactions, to_wire(tx), key=tx.transaction_id.encode())
                await asyncio.sleep(MARKER_EVERY_S)
            load_cpu.append(proc_cpu_s(worker.pid) or 0.0)
            load_cpu.append(time.monotonic())

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

        sampler = RssSampler(worker.pid)
        sampler.start()
        try:
            await asyncio.gather(markers(), watch(), load)
        finally:
            sampler.stop()
            await producer.stop()
            connection.close()
            exit_code = stop_worker(worker)
        latencies = sorted(seen[u] - sent[u] for u in seen if u in sent)
        cuts = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [float("nan")] * 99
        cpu_s = load_cpu[0] - cpu_start if load_cpu else None
        hops = await _hops(deployment, sent_wall, {u: sent_wall[u] + seen[u] - sent[u] for u in seen if u in sent})
        result = {
            "code": code,
            "case": case.name,
            "users": case.users,
            "products": case.products,
            "rate_tx_per_s": args.rate,
            "seconds": args.seconds,
            "produced_s": (load_cpu[1] - t_start) if load_cpu else None,
            "markers_sent": len(sent),
            "markers_seen": len(latencies),
            "p50_s": cuts[49],
            "p90_s": cuts[89],
            "p99_s": cuts[98],
            "max_s": latencies[-1] if latencies else None,
            "worker_cpu_us_per_tx": cpu_s / count * 1e6 if cpu_s else None,
            "worker_cpu_cores": cpu_s / (load_cpu[1] - t_start) if load_cpu else None,
            "peak_rss_mb": max((kb for _, kb in sampler.samples), default=0) / 1024,
            "worker_exit_code": exit_code,
            "hops": hops,
        }
        log(f"  [{code}/{case.name}] hops p50/p99: " + ", ".join(
            f"{name} {h['p50_s']:.2f}/{h['p99_s']:.2f} s" for name, h in hops.items() if h))
        log(f"  [{code}/{case.name}] p50 {result['p50_s']:.2f} s, p99 {result['p99_s']:.2f} s, max {result['max_s']:.2f} s "
            f"({len(latencies)} of {len(sent)} markers); worker {result['worker_cpu_us_per_tx'] or 0:.0f} CPU-µs/tx")
        return result
    finally:
        await deployment.close()


async def _hops(deployment: Deployment, sent: dict[str, float], seen: dict[str, float]) -> dict[str, Any]:
    # ``sent`` and ``seen``: wall-clock times (time.time()), comparable with the record timestamps
    """Where each marker's time went, from Kafka's record timestamps: produce -> delta message sent
    (the transaction feed's batch window and landing), -> table record written (the derivation),
    -> visible in MySQL (the table feed's batch window and the fact sink)."""
    from aiokafka import AIOKafkaConsumer

    settings = deployment.settings
    output = next(feed.topic for feed in deployment.feeds if feed.name == "user_transaction_summary")
    consumer = AIOKafkaConsumer(settings.table_deltas_topic, output, bootstrap_servers=settings.kafka.bootstrap_servers,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    deltas: dict[str, float] = {}
    written: dict[str, float] = {}
    try:
        ends = await consumer.end_offsets(list(consumer.assignment()) or await _assigned(consumer))
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for tp, messages in (await consumer.getmany(timeout_ms=1000)).items():
                for message in messages:
                    if tp.topic == output:
                        user = json.loads(message.key).get("USER_ID", "")
                        if user.startswith("LAT-"):
                            written.setdefault(user, message.timestamp / 1000)
                    elif b"LAT-" in message.value:
                        for table in json.loads(message.value)["t"].values():
                            for key in table:
                                if key.startswith('{"USER_ID":"LAT-'):
                                    deltas.setdefault(json.loads(key)["USER_ID"], message.timestamp / 1000)
    finally:
        await consumer.stop()

    def cut(values: list[float]) -> dict[str, float] | None:
        if len(values) < 2:
            return None
        q = statistics.quantiles(values, n=100)
        return {"p50_s": q[49], "p99_s": q[98], "n": len(values)}

    return {
        "produce_to_delta": cut([deltas[u] - sent[u] for u in deltas if u in sent]),
        "delta_to_table_record": cut([written[u] - deltas[u] for u in written if u in deltas]),
        "table_record_to_mysql": cut([seen[u] - written[u] for u in written if u in seen]),
    }


async def _assigned(consumer: Any) -> list:
    while not consumer.assignment():
        await asyncio.sleep(0.1)
    return list(consumer.assignment())


# -- report -----------------------------------------------------------------------------------


def _f(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def markdown(results: dict[str, Any]) -> str:
    m, g = results["machine"], results["git"]
    lines = [
        "# Table path benchmark (`make bench-tables`)",
        "",
        f"Measured {results['date_utc']} on {m['nproc']} vCPU / {m['memory_gib']} GiB ({m['cpu_model']}), "
        f"load average at start {results.get('loadavg', '?')}; broker, MariaDB, load generator and worker on the same "
        f"machine. Code: `{g['commit']}`"
        + (f" (local changes: {', '.join(g['worker_code_changed'])})" if g["worker_code_changed"] else "")
        + (f"; reference: `{results['reference']}`" if results.get("reference") else "")
        + f". Batch window {results['window_ms']} ms. Load average at the end {results.get('loadavg_end', '?')}. "
        "Raw: `bench/results/tables-LATEST.json`.",
    ]
    for failure in results.get("failures", []):
        lines.append(f"\n**A {failure['phase']} run failed:** {failure['error'][:300]}")
    runs = results.get("derivation", [])
    if runs:
        lines += [
            "",
            f"## Derivation alone: the delta messages of {runs[0]['transactions']:,} transactions",
            "",
            "The process starts on an empty deltas topic; once its consumer holds the deltas partitions (and it "
            "settled for 3 s) the delta messages are sent, as the delta sink would have. Time and CPU (the "
            "process's user + system time from /proc) count from the first delta sent to the commit of the last "
            "(a commit follows the broker's acknowledgement of the changelog and table records it covers): start-up "
            "is left out. *Agent alone*: a process running only the table agent (best of the repetitions); *whole "
            "worker*: `txlake worker`, which also lands the table topics in MySQL meanwhile (the stream topics are "
            "empty). The table topics are then read back and compared with an independent computation.",
            "",
            "| code, process | keys | transactions/s | CPU-µs/tx | one core's worth (10⁶ ÷ CPU-µs/tx) | cores used "
            "| table records written | peak RSS | table topics = independent computation |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in runs:
            env = ", ".join(f"{k}={v}" for k, v in r["env"].items())
            match = {True: "yes", False: "**NO**", None: "—"}[r["tables_match_independent_computation"]]
            lines.append(
                f"| {r['code']}, {MODES[r['mode']]}{' (' + env + ')' if env else ''} "
                f"| {r['users']:,} users, {r['products']:,} products | **{_f(r['tx_per_s'])}** | **{_f(r['cpu_us_per_tx'])}** "
                f"| {_f(1e6 / r['cpu_us_per_tx'] if r['cpu_us_per_tx'] else None)} | {_f(r.get('cpu_cores'), 2)} "
                f"| {r['table_topic_records']:,} | {r['peak_rss_mb']:.0f} MB | {match} |"
            )
        for r in runs:
            if len(r.get("repeats", [])) > 1:
                cpu = ", ".join(_f(x["cpu_us_per_tx"]) for x in r["repeats"])
                lines.append(f"\n{r['code']}, {MODES[r['mode']]}, {r['case']}: best of {len(r['repeats'])} repetitions "
                             f"from scratch (CPU-µs/tx: {cpu}; load averages "
                             f"{'; '.join(x.get('loadavg', '?') for x in r['repeats'])}).")
            if r.get("restore"):
                x = r["restore"]
                lines.append(f"\nRestore after the {r['case']} run: {x['records']:,} changelog records ({x['keys']:,} keys) "
                             f"read in {_f(x['slowest_partition_s'], 1)} s, partitions in parallel "
                             f"({_f(x['records_per_s'])} records/s); peak RSS {x['peak_rss_mb']:.0f} MB.")
        ratios = results.get("ratios", [])
        if ratios:
            lines += ["", "| keys | current ÷ reference, transactions/s | reference ÷ current, CPU-µs/tx |", "|---|---:|---:|"]
            for r in ratios:
                lines.append(f"| {r['case']} | {r['throughput_ratio']:.1f}× | {r['cpu_ratio']:.1f}× |")
    pipeline = results.get("pipeline", [])
    if pipeline:
        lines += [
            "",
            f"## Whole pipeline, backlog: {pipeline[0]['transactions']:,} transactions through streams and tables, one worker",
            "",
            "| code | keys | landed in | transactions/s | CPU-µs/tx | peak RSS |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for r in pipeline:
            lines.append(f"| {r['code']} | {r['users']:,} users, {r['products']:,} products | {r['landed_s']:.1f} s "
                         f"| **{_f(r['tx_per_s'])}** | {_f(r['cpu_us_per_tx'])} | {r['peak_rss_mb']:.0f} MB |")
        ratios = results.get("pipeline_ratios", [])
        if ratios:
            lines += ["", "| keys | current ÷ reference, transactions/s | reference ÷ current, CPU-µs/tx |", "|---|---:|---:|"]
            for r in ratios:
                lines.append(f"| {r['case']} | {r['throughput_ratio']:.1f}× | {r['cpu_ratio']:.1f}× |")
    latency = results.get("latency", [])
    if latency:
        lines += [
            "",
            f"## Produce → visible in MySQL, whole pipeline in one process, steady {latency[0]['rate_tx_per_s']:,.0f} "
            f"transactions/s for {latency[0]['seconds']:.0f} s",
            "",
            "| code | keys | p50 | p90 | p99 (target ≤ 2 s) | max | markers seen | worker CPU-µs/tx | worker cores | peak RSS |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in latency:
            lines.append(
                f"| {r['code']} | {r['users']:,} users, {r['products']:,} products | {r['p50_s']:.2f} s | {r['p90_s']:.2f} s "
                f"| **{r['p99_s']:.2f} s** | {_f(r['max_s'], 2)} s | {r['markers_seen']} of {r['markers_sent']} "
                f"| {_f(r['worker_cpu_us_per_tx'])} | {_f(r['worker_cpu_cores'], 2)} | {r['peak_rss_mb']:.0f} MB |"
            )
        lines += [
            "",
            "Where the markers' time went (Kafka record timestamps; p50 / p99): the transaction feed's batch window and "
            "landing up to the delta message, the derivation up to the table record, the table feed's batch window "
            "and the fact sink up to the row in MySQL.",
            "",
            "| code | keys | produce → delta message | delta message → table record (derivation) | table record → MySQL |",
            "|---|---|---:|---:|---:|",
        ]
        for r in latency:
            h = r.get("hops") or {}

            def hop(name: str, h: dict = h) -> str:
                v = h.get(name)
                return f"{v['p50_s']:.2f} / {v['p99_s']:.2f} s" if v else "—"

            lines.append(f"| {r['code']} | {r['users']:,} users, {r['products']:,} products | {hop('produce_to_delta')} "
                         f"| {hop('delta_to_table_record')} | {hop('table_record_to_mysql')} |")
    return "\n".join(lines) + "\n"


def _ratios(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Current ÷ reference per case (the whole worker of each code)."""

    def figures(run: dict[str, Any]) -> tuple[float, float]:
        return run["tx_per_s"], run["cpu_us_per_tx"]

    out = []
    for case in dict.fromkeys(r["case"] for r in runs):
        current = [r for r in runs if r["case"] == case and r["code"] == "current" and not r.get("env")
                   and r.get("mode", "worker") == "worker"]
        reference = [r for r in runs if r["case"] == case and r["code"] == "reference"]
        if current and reference:
            (c_tx, c_cpu), (r_tx, r_cpu) = figures(current[0]), figures(reference[0])
            out.append({"case": case, "throughput_ratio": c_tx / r_tx, "cpu_ratio": r_cpu / c_cpu})
    return out


async def _amain(args: argparse.Namespace, results: dict[str, Any], save: Any) -> dict[str, Any]:
    """Run the phases into ``results``; ``save()`` after every run, so a later failure keeps them."""
    from tools.loadgen import generate

    async def attempt(kind: str, run: Any) -> None:
        try:
            results[kind].append(await run)
        except Exception as exc:  # noqa: BLE001 - a run that fails or times out is recorded, the others go on
            log(f"  {kind} run FAILED: {type(exc).__name__}: {str(exc)[:500]}")
            results.setdefault("failures", []).append({"phase": kind, "error": f"{type(exc).__name__}: {exc}"[:2000]})
        save()

    cases = [CASES[name] for name in args.cases.split(",") if name]
    if not args.skip_derivation:
        for case in cases:
            log(f"derivation, {case.name}: {args.transactions:,} transactions, {case.users:,} users, {case.products:,} products")
            transactions = list(generate(args.transactions, seed=1, now=NOW, users=case.users, products=case.products))
            await attempt("derivation", derivation_run(case, transactions, args, code="current", tree=None, mode="agent",
                                                       profile=args.profile))
            await attempt("derivation", derivation_run(case, transactions, args, code="current", tree=None, mode="worker"))
            if args.reference_tree is not None:
                await attempt("derivation", derivation_run(
                    case, transactions[:args.reference_transactions], args, code="reference", tree=args.reference_tree,
                    mode="worker"))
            if args.sensors_ab:
                await attempt("derivation", derivation_run(case, transactions, args, code="current", tree=None, mode="worker",
                                                           extra_env={"TXLAKE_WEB__FAUST_SENSORS": "false"}))
            results["ratios"] = _ratios(results["derivation"])
    if args.pipeline_transactions:
        for case in cases:
            log(f"pipeline backlog, {case.name}: transactions through streams and tables")
            await attempt("pipeline", pipeline_run(case, args, code="current", tree=None,
                                                   transactions=args.pipeline_transactions))
            if args.reference_tree is not None:
                await attempt("pipeline", pipeline_run(case, args, code="reference", tree=args.reference_tree,
                                                       transactions=args.reference_pipeline_transactions))
            results["pipeline_ratios"] = _ratios(results["pipeline"])
    if not args.skip_latency:
        for case in cases:
            log(f"latency, {case.name}: {args.rate:,.0f} transactions/s for {args.seconds:.0f} s")
            await attempt("latency", latency_run(case, args, code="current", tree=None))
    return results


def _tree_commit(tree: Path) -> str:
    stamp = tree / ".commit"
    return stamp.read_text().strip() if stamp.exists() else str(tree)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.chdir(REPO)
    results: dict[str, Any] = {
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "git": git_state(),
        "reference": _tree_commit(args.reference_tree) if args.reference_tree else None,
        "window_ms": args.window_ms,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "derivation": [],
        "pipeline": [],
        "latency": [],
    }

    def save() -> None:  # after every run: an interrupted benchmark keeps what it measured
        results["loadavg_end"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        write_latest("tables", results, markdown(results))

    asyncio.run(_amain(args, results, save))
    save()
    print(markdown(results))
    log("results: bench/results/tables-LATEST.{json,md}, bench/results/LATEST.md")
    return 1 if results.get("failures") else 0


if __name__ == "__main__":
    sys.exit(main())
