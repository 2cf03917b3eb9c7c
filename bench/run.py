"""txlake's stream benchmark: one command, one isolated run, figures you can compare.

    .venv/bin/python -m bench.run [--transactions N] [--partitions N] [--skip-naive] [--keep] [--profile]

Four steps (docs/benchmarks.md): fill fresh topics with generated transactions and their derived
streams (:func:`bench.infra.fill`); time ``txlake worker`` draining them into the lake and the
warehouse (:mod:`bench.drain`); run two references on the same topics -- a naive consumer written
like the original scripts (:mod:`bench.naive_consumer`) and Kafka's own ConsumerPerformance; then
print the page and write ``bench/results/streams-LATEST.{json,md}`` and ``LATEST.md``
(:mod:`bench.report`).

Everything is isolated per run: a unique topic suffix, consumer group, lake and state directory
under /tmp, and a fresh MySQL database created as root over the local socket; topics, groups and
database are removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.drain import drain
from bench.infra import (
    REPO,
    Run,
    consumer_performance,
    create_database,
    delete_groups,
    delete_topics,
    drop_database,
    fill,
    git_state,
    java_version,
    kafka_version,
    log,
    machine_info,
    new_run,
    package_versions,
    warehouse_counts,
)
from bench.probes import lake_stats
from bench.report import RESULTS_DIR, evaluate_streams, fmt, print_streams, streams_markdown, write_latest


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=1_000_000, help="transactions to produce (default 1,000,000)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions per topic (default 4)")
    parser.add_argument("--skip-naive", action="store_true", help="skip the naive reference consumer")
    parser.add_argument("--keep", action="store_true", help="keep topics, database, lake and logs")
    parser.add_argument("--naive-messages", type=int, default=100_000, help="naive sample size (default 100,000)")
    parser.add_argument("--naive-seconds", type=float, default=60.0, help="naive time bound (default 60 s)")
    parser.add_argument("--rotate-interval-ms", type=int, default=1000, help="worker rotate interval (default 1000)")
    parser.add_argument("--drain-timeout", type=float, default=1200.0, help="give up the drain after this (s)")
    parser.add_argument("--profile", action="store_true",
                        help="record the worker with py-spy after its first batch (perturbs timings; needs py-spy)")
    parser.add_argument("--no-write", action="store_true", help="print the results, write no file")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR,
                        help="where streams-LATEST.json/.md and LATEST.md go (default bench/results)")
    return parser.parse_args(argv)


async def _amain(args: argparse.Namespace, run: Run, cleanup: dict[str, Any]) -> dict[str, Any]:
    """The four steps; ``cleanup`` is filled as soon as something exists that must be removed."""
    from app.core.feeds import load_feeds
    from app.core.settings import Settings

    settings = Settings()
    feeds = load_feeds(settings)
    results: dict[str, Any] = {
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        "versions": {
            "python": platform.python_version(),
            "kafka": kafka_version(),
            "java": java_version(),
            "packages": package_versions(),
        },
        "run": {
            "run_id": run.run_id,
            "topic_suffix": run.suffix,
            "group_id": run.group_id,
            "database": run.database,
            "scratch": str(run.scratch),
            "args": vars(args),
        },
        "settings": {
            "flush_size": settings.batching.flush_size,
            "rotate_interval_ms": settings.batching.rotate_interval_ms,
            "commit_interval_ms": settings.kafka.commit_interval_ms,
            "mysql_pool_size": settings.mysql.pool_size,
            "lake_compression": settings.lake.compression,
            "blacklist_countries": sorted(settings.blacklist.countries),
        },
        "profiled": args.profile,
        "git": git_state(),
    }
    cleanup.update(groups=[run.group_id], topics=[f.topic for f in feeds] + [settings.dead_letter_topic])

    log(f"run {run.run_id}: database {run.database}, topics *{run.suffix}, scratch {run.scratch}")
    results["versions"]["mariadb"] = await create_database(run.database, settings.mysql.user)
    cleanup["database"] = True

    log(f"1/4 fill: {args.transactions:,} transactions into {args.partitions}-partition topics")
    results["fill"] = await fill(settings, feeds, args.partitions, args.transactions)
    f = results["fill"]
    log(f"  {f['messages_total']:,} messages in {f['produce_s']:.1f}s ({f['produce_msg_per_s']:,.0f} msg/s)")

    log("2/4 txlake worker drain")
    # The stream feeds: the table feeds' topics stay empty here (derivation is off, see new_run).
    feeds = tuple(feed for feed in feeds if not feed.is_table)
    results["drain"] = await drain(run, settings, feeds, results["fill"], args.drain_timeout, args.profile)
    d = results["drain"]
    log(f"  drained {d['messages']:,} messages in {d['drain_s']:.1f}s = {d['msg_per_s']:,.0f} msg/s "
        f"({fmt(d['msg_per_s_after_first_batch'])} msg/s after the first batch); peak RSS {fmt(d['peak_rss_mb'])} MB; "
        f"worker exit code {d['worker_exit_code']}")
    results["lake"] = lake_stats(settings.lake.root)
    try:
        results["warehouse"] = await warehouse_counts(settings)
    except Exception as exc:  # noqa: BLE001 - informative only
        results["warehouse"] = {"error": f"{type(exc).__name__}: {exc}"}

    transactions_topic = next(feed.topic for feed in feeds if feed.name == "transaction_stream")
    if args.skip_naive:
        log("3/4 naive consumer: skipped")
    else:
        from bench.naive_consumer import run_naive

        group = f"bench-naive-{run.run_id}"
        cleanup["groups"].append(group)
        log(f"3/4 naive consumer on {transactions_topic}: first {args.naive_messages:,} messages or {args.naive_seconds:.0f}s")
        s = settings.mysql
        naive = await run_naive(
            bootstrap_servers=settings.kafka.bootstrap_servers,
            topic=transactions_topic,
            group_id=group,
            out_dir=run.scratch / "naive-parquet",
            mysql={"host": s.host, "port": s.port, "user": s.user, "password": s.password.get_secret_value(), "db": s.database},
            max_messages=args.naive_messages,
            max_seconds=args.naive_seconds,
        )
        results["naive"] = naive.as_dict()
        log(f"  {naive.messages:,} messages in {naive.elapsed_s:.1f}s = {naive.msg_per_s:,.0f} msg/s (stopped by {naive.stopped_by})")

    log("4/4 Kafka ConsumerPerformance (4.1 has no --include: one run per topic)")
    perf: dict[str, Any] = {"per_topic": {}}
    for index, feed in enumerate(feeds):
        group = f"bench-perf-{run.run_id}-{index}"
        cleanup["groups"].append(group)
        count = f["messages_per_topic"].get(feed.topic, 0)
        if count == 0:
            continue
        row = await asyncio.to_thread(
            consumer_performance, settings.kafka.bootstrap_servers, feed.topic, count, group, run.scratch / "kafka-tools-log"
        )
        perf["per_topic"][feed.name] = row
        log(f"  {feed.topic}: {row['data.consumed.in.nMsg']:,.0f} messages, {row['nMsg.sec']:,.0f} msg/s, {row['MB.sec']:.1f} MB/s")
    perf["transactions"] = perf["per_topic"].get("transaction_stream")
    rows = list(perf["per_topic"].values())
    if rows and all(r["elapsed_s"] for r in rows):
        perf["all_topics_s"] = sum(r["elapsed_s"] for r in rows)
        perf["all_topics_messages"] = sum(r["data.consumed.in.nMsg"] for r in rows)
        perf["all_topics_mb"] = sum(r["data.consumed.in.MB"] for r in rows)
        perf["all_topics_msg_per_s"] = perf["all_topics_messages"] / perf["all_topics_s"]
        # what the transactions-only figure implies for all messages, by bytes (sizes differ per topic)
        tx = perf["transactions"]
        if tx and tx["MB.sec"]:
            perf["implied_all_topics_s_from_transactions_mb_per_s"] = perf["all_topics_mb"] / tx["MB.sec"]
    results["consumer_performance"] = perf
    results["evaluation"] = evaluate_streams(results)
    return results


async def _cleanup(run: Run, cleanup: dict[str, Any]) -> None:
    from app.core.settings import Settings

    settings = Settings()
    try:
        await delete_topics(settings.kafka.bootstrap_servers, cleanup.get("topics", []))
    except Exception as exc:  # noqa: BLE001 - best effort
        log(f"could not delete topics: {exc}")
    if cleanup.get("database"):
        try:
            await drop_database(run.database, settings.mysql.user)
        except Exception as exc:  # noqa: BLE001 - best effort, reported
            log(f"could not drop database {run.database}: {exc}")
    await asyncio.to_thread(delete_groups, settings.kafka.bootstrap_servers, cleanup.get("groups", []), run.scratch)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.chdir(REPO)
    run = new_run(args.rotate_interval_ms)
    os.environ.update(run.env)
    started = time.monotonic()
    results: dict[str, Any] = {}
    cleanup: dict[str, Any] = {}
    failed = False
    try:
        results = asyncio.run(_amain(args, run, cleanup))
    except BaseException as exc:  # noqa: BLE001 - every failure (Ctrl-C too) is recorded, then re-raised below
        failed = True
        log(f"FAILED: {type(exc).__name__}: {exc}")
        if isinstance(exc, KeyboardInterrupt):
            log("interrupted")
    finally:
        if args.keep:
            log(f"--keep: topics *{run.suffix}, database {run.database} and {run.scratch} are kept")
        else:
            log("cleaning up: topics, consumer groups, database, scratch")
            asyncio.run(_cleanup(run, cleanup))
            shutil.rmtree(run.scratch, ignore_errors=True)
    if failed:
        return 1
    results["bench_wall_s"] = time.monotonic() - started
    print_streams(results)
    if not args.no_write:
        raw, page = write_latest("streams", results, streams_markdown(results), args.results_dir)
        log(f"results: {raw} and {page} (index: {args.results_dir / 'LATEST.md'})")
    log(f"bench wall time {results['bench_wall_s']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
