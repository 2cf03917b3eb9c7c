"""The ``txlake`` command line: worker, produce, feeds, topics, progress, report, snapshot, lake."""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from datetime import UTC, datetime

from app.core.errors import ConfigurationError
from app.core.feeds import Feed, load_feeds
from app.core.settings import Settings
from app.exports.cli import register as register_export_command
from app.lake.commands import register as register_lake_commands
from app.snapshots.commands import register as register_snapshot_commands

__all__ = ["main"]


def _feed_named(feeds: tuple[Feed, ...], name: str) -> Feed:
    for feed in feeds:
        if feed.name == name:
            return feed
    raise ConfigurationError(f"the demo generator needs a feed named {name!r} in the feeds file")


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    import faust

    from app.core.logs import logging_config
    from app.ops.topics import ensure_derivation_topics
    from app.runtime.worker import create_app

    settings.datadir.mkdir(parents=True, exist_ok=True)
    feeds = load_feeds(settings)
    partitions = asyncio.run(ensure_derivation_topics(settings, feeds)) if settings.tables.derive else None
    app = create_app(settings, feeds, partitions)
    # Everything allocated so far (modules, app, settings) lives for the whole run: move it
    # out of the cyclic collector's sight, and collect less often -- a batch allocates
    # thousands of short-lived records and the default thresholds run the collector constantly.
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    worker = faust.Worker(
        app, loglevel=settings.log_level, logging_config=logging_config(settings.log_format, settings.log_level)
    )
    worker.execute_from_commandline()  # runs until SIGTERM/SIGINT, then exits the process
    return 0


def cmd_produce(settings: Settings, args: argparse.Namespace) -> int:
    from app.core.security import kafka_client_options

    try:
        from tools.loadgen import StreamTopics, produce
    except ModuleNotFoundError:
        raise ConfigurationError(
            "`txlake produce` is the demo load generator of a development checkout (tools/loadgen.py); "
            "it is not part of the worker image"
        ) from None

    feeds = load_feeds(settings)
    topics = StreamTopics(
        transactions=_feed_named(feeds, "transaction_stream").topic,
        flattened=_feed_named(feeds, "transaction_flattened").topic,
        anonymized=_feed_named(feeds, "transaction_stream_anonymized").topic,
        blacklisted=_feed_named(feeds, "transaction_stream_blacklisted").topic,
    )
    report = asyncio.run(
        produce(
            settings.kafka.bootstrap_servers,
            topics,
            args.count,
            seed=args.seed,
            rate=args.rate,
            anonymization_key=settings.anonymization.key.get_secret_value().encode(),
            blacklist=settings.blacklist,
            days=args.days,
            late_fraction=args.late_fraction,
            now=datetime.now(UTC),
            client_options=kafka_client_options(settings.kafka),
        )
    )
    for topic, count in report.counts.items():
        print(f"  {topic:<40} {count:>10,} messages")
    total = report.counts.get(topics.transactions, args.count)
    print(f"produced {total:,} transactions in {report.elapsed_s:.1f}s")
    return 0


def cmd_feeds(settings: Settings, args: argparse.Namespace) -> int:
    feeds = load_feeds(settings, args.file)
    print(f"{'feed':<32} {'topic':<34} {'record / table':<28} {'dataset':<40} warehouse")
    for feed in feeds:
        kind = feed.record or f"table {feed.table}"
        tables = feed.warehouse or ((feed.table_spec.fact_table,) if feed.is_table else ())
        print(f"{feed.name:<32} {feed.topic:<34} {kind:<28} {feed.dataset:<40} {', '.join(tables) or '-'}")
    print(f"{len(feeds)} feeds OK; dead letters go to {settings.dead_letter_topic}")
    return 0


def cmd_topics(settings: Settings, args: argparse.Namespace) -> int:
    from app.ops.topics import create_topics

    created = asyncio.run(create_topics(settings, load_feeds(settings), args.partitions))
    print(f"created {len(created)} topics: {', '.join(created) or '(all existed)'}")
    return 0


def cmd_progress(settings: Settings, args: argparse.Namespace) -> int:
    from app.ops.progress import feed_progress, wait_until_landed

    feeds = load_feeds(settings)
    if args.wait:
        rows = asyncio.run(wait_until_landed(settings, feeds, args.timeout))
    else:
        rows = asyncio.run(feed_progress(settings, feeds))
    names = list(dict.fromkeys(name for row in rows for name in row.positions))
    print(f"{'feed':<32} {'partition':>9} {'last offset':>12}" + "".join(f" {name:>12}" for name in names))
    for row in rows:
        held = "".join(f" {str(row.positions[name]) if name in row.positions else '-':>12}" for name in names)
        print(f"{row.feed:<32} {row.partition:>9} {row.last_offset:>12}{held}")
    return 0 if all(row.landed for row in rows) else 1


def cmd_report(settings: Settings, args: argparse.Namespace) -> int:
    from app.ops.report import print_report

    print_report(settings, load_feeds(settings))
    return 0


def cmd_verify(settings: Settings, args: argparse.Namespace) -> int:
    import json

    from app.ops.verify.deployment import verify_deployment
    from app.ops.verify.render import render_text

    report = asyncio.run(verify_deployment(settings, load_feeds(settings), settled=args.settled))
    print(json.dumps(report.to_json(), indent=2) if args.json else render_text(report))
    return 0 if report.ok else 1


def cmd_settings(settings: Settings, args: argparse.Namespace) -> int:
    print(settings.model_dump_json(indent=2))  # SecretStr fields dump as "**********"
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="txlake", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("worker", help="run the streaming worker (Faust)").set_defaults(run=cmd_worker)

    produce = commands.add_parser("produce", help="write seeded demo transactions and their derived streams")
    produce.add_argument("--count", type=int, default=10_000, help="transactions to produce")
    produce.add_argument("--rate", type=float, default=None, help="transactions per second (default: as fast as possible)")
    produce.add_argument("--seed", type=int, default=42)
    produce.add_argument("--days", type=int, default=3, help="days the event times spread over")
    produce.add_argument("--late-fraction", type=float, default=0.05, help="share of late events (older than today)")
    produce.set_defaults(run=cmd_produce)

    feeds = commands.add_parser("feeds", help="list and validate the feeds")
    feeds.add_argument("--file", default=None, help="feeds file to validate (default: the configured one)")
    feeds.set_defaults(run=cmd_feeds)

    topics = commands.add_parser("topics", help="create the feed topics and the dead-letter topic")
    topics.add_argument("--partitions", type=int, default=4)
    topics.set_defaults(run=cmd_topics)

    progress = commands.add_parser("progress", help="Kafka end offsets against each sink's ledger")
    progress.add_argument("--wait", action="store_true", help="wait until everything in Kafka has landed")
    progress.add_argument("--timeout", type=float, default=300.0)
    progress.set_defaults(run=cmd_progress)

    commands.add_parser("report", help="show where the data landed").set_defaults(run=cmd_report)
    register_snapshot_commands(commands)
    register_lake_commands(commands)
    register_export_command(commands)

    verify = commands.add_parser("verify", help="reconcile Kafka, the lake, the warehouse and the dead letters")
    verify.add_argument("--json", action="store_true", help="machine-readable output")
    verify.add_argument(
        "--settled", action="store_true", help="nothing is in flight: table changelogs must have landed up to Kafka's end"
    )
    verify.set_defaults(run=cmd_verify)

    commands.add_parser("settings", help="print the effective settings (secrets masked)").set_defaults(run=cmd_settings)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
        return args.run(settings, args)
    except ConfigurationError as exc:
        print(f"txlake: configuration error: {exc}", file=sys.stderr)
        return 2
    except TimeoutError as exc:
        print(f"txlake: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
