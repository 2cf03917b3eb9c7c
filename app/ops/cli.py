"""The ``txlake`` command line: run the worker, feed it demo data, inspect and verify what landed.

Exit status of every command: 0 success, 1 a failure at run time (a service unreachable or
refusing, data not landed, a check that found a problem), 2 bad usage or configuration (an
unknown option, an invalid setting, a missing topic or lake), 130 interrupted. A failure is one
line on stderr (``txlake: …``); ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from app.core.environment import dotenv_variables, unknown_variables
from app.core.errors import ConfigurationError
from app.core.feeds import ROLES, Feed, load_feeds
from app.core.logs import quiet_expected_noise
from app.core.settings import Settings
from app.exports.cli import register as register_export_command
from app.lake.commands import register as register_lake_commands
from app.ops.failures import describe_failure
from app.snapshots.commands import register as register_snapshot_commands

__all__ = ["build_parser", "main"]


def _feed_named(feeds: tuple[Feed, ...], name: str) -> Feed:
    for feed in feeds:
        if feed.name == name:
            return feed
    raise ConfigurationError(f"the demo generator needs a feed named {name!r} in the feeds file")


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    import faust

    from app.core.logs import logging_config
    from app.ops.topics import ensure_derivation_topics
    from app.runtime.preflight import preflight
    from app.runtime.worker import create_app

    settings.datadir.mkdir(parents=True, exist_ok=True)
    feeds = load_feeds(settings)
    with _client_logs_muted(args.debug):  # a failure here is reported once, by main()
        asyncio.run(preflight(settings, feeds))  # one line and exit 1/2 here, not a traceback from inside Faust
        partitions = asyncio.run(ensure_derivation_topics(settings, feeds)) if settings.tables.derive else None
    app = create_app(settings, feeds, partitions, role=args.role)
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


async def _missing_topics(settings: Settings, topics: list[str]) -> list[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    from app.core.security import kafka_client_options

    admin = AIOKafkaAdminClient(**kafka_client_options(settings.kafka))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
    finally:
        await admin.close()
    return [topic for topic in topics if topic not in existing]


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
    # Producing to a missing topic would have the broker auto-create it (one partition, defaults).
    missing = asyncio.run(_missing_topics(settings, [topics.transactions, topics.flattened, topics.anonymized,
                                                     topics.blacklisted]))
    if missing:
        verb = "does" if len(missing) == 1 else "do"
        raise ConfigurationError(f"topic {', '.join(missing)} {verb} not exist: create the topics first (txlake topics)")
    # Where the worker derives the three streams itself, the demo writes the transactions only
    # (as a shop's producer would); otherwise it writes what ksqlDB would derive too.
    derived = not settings.derives_streams if args.derived is None else args.derived
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
            now=args.now or datetime.now(UTC),
            client_options=kafka_client_options(settings.kafka),
            users=args.users,
            products=args.products,
            derived=derived,
        )
    )
    if not derived:
        print("  (the derived streams are the worker's to write: streams.derive is on)")
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

    created = asyncio.run(create_topics(settings, load_feeds(settings), args.partitions, table_partitions=args.table_partitions))
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


def _bounded(kind: type, minimum: float, maximum: float | None = None, *, exclusive: bool = False):  # type: ignore[no-untyped-def]
    """An argparse ``type``: a number of ``kind`` at least (above, with ``exclusive``) ``minimum``, at most ``maximum``."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        too_low = value <= minimum if exclusive else value < minimum
        if too_low or (maximum is not None and value > maximum):
            bound = f"> {minimum:g}" if exclusive else f">= {minimum:g}"
            raise argparse.ArgumentTypeError(
                f"{text} is out of range: must be {bound}" + (f" and <= {maximum:g}" if maximum is not None else "")
            )
        return value

    return parse


def _utc_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time (e.g. 2026-11-27T00:00:00Z)") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _txlake_version() -> str:
    try:
        return version("txlake")
    except PackageNotFoundError:  # run from a source tree without an install
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The ``txlake`` parser: every command and option has a help text (checked by tests/unit/test_cli.py)."""
    parser = argparse.ArgumentParser(
        prog="txlake",
        description="Land Kafka transaction streams into a Parquet lake and a MySQL warehouse, exactly once.",
        epilog="Settings come from TXLAKE_* environment variables, a .env file and secret files "
        "(`txlake settings` shows them). Exit status: 0 ok, 1 failed at run time, 2 bad usage or configuration.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_txlake_version()}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a failure (and INFO logs)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")

    worker = commands.add_parser("worker", help="run the streaming worker (Faust) until SIGTERM")
    worker.add_argument(
        "--role",
        choices=ROLES,
        default="all",
        help="streams: land the stream feeds (and derive the derived streams and table deltas); "
        "tables: derive the four tables and land them into the facts; all: both (default)",
    )
    worker.set_defaults(run=cmd_worker)

    produce = commands.add_parser(
        "produce", help="write seeded demo transactions (and their derived streams without streams.derive)"
    )
    produce.add_argument("--count", type=_bounded(int, 0), default=10_000, help="transactions to produce (default 10000)")
    produce.add_argument("--rate", type=_bounded(float, 0, exclusive=True), default=None,
                         help="transactions per second (default: as fast as possible)")
    produce.add_argument("--seed", type=int, default=42, help="seed of the generator: same seed, same transactions (default 42)")
    produce.add_argument("--days", type=_bounded(int, 1), default=3, help="days the event times spread over (default 3)")
    produce.add_argument("--late-fraction", type=_bounded(float, 0, 1), default=0.05,
                         help="share of late events, older than their neighbours' day (0..1, default 0.05)")
    produce.add_argument("--now", type=_utc_time, default=None,
                         help="end of the event-time window, ISO 8601 (default: now); fix it for a reproducible load")
    produce.add_argument("--users", type=_bounded(int, 1), default=500,
                         help="distinct users: the key cardinality of the user tables (default 500)")
    produce.add_argument("--products", type=_bounded(int, 1), default=50,
                         help="distinct products: the demo's 50, more are priced variants (default 50)")
    produce.add_argument(
        "--derived",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also write the three derived streams, as ksqlDB would (default: only when streams.derive is off)",
    )
    produce.set_defaults(run=cmd_produce)

    feeds = commands.add_parser("feeds", help="list and validate the feeds")
    feeds.add_argument("--file", default=None, help="feeds file to validate (default: the configured one)")
    feeds.set_defaults(run=cmd_feeds)

    topics = commands.add_parser("topics", help="create the feed topics and the dead-letter topic")
    topics.add_argument("--partitions", type=_bounded(int, 1), default=4,
                        help="partitions of each stream topic created (default 4; existing topics are left alone)")
    topics.add_argument("--table-partitions", type=_bounded(int, 1), default=None,
                        help="partitions of the table topics, the deltas and the table state "
                        "(default: tables.partitions or --partitions)")
    topics.set_defaults(run=cmd_topics)

    progress = commands.add_parser("progress", help="Kafka end offsets against each sink's ledger")
    progress.add_argument("--wait", action="store_true", help="wait until everything in Kafka has landed")
    progress.add_argument("--timeout", type=_bounded(float, 0, exclusive=True), default=300.0,
                          help="seconds --wait waits before failing (default 300)")
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
    _accept_debug_everywhere(commands)
    return parser


def _accept_debug_everywhere(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``--debug`` after the command too (``txlake lake ls --debug``), in every subcommand."""
    for subparser in set(commands.choices.values()):
        subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                               help="show the traceback of a failure (and INFO logs)")
        for action in subparser._actions:  # noqa: SLF001 - argparse has no public list of a parser's actions
            if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001 - argparse's subcommand action has no public type
                _accept_debug_everywhere(action)


def _warn_unknown_variables() -> None:
    """One warning per ``TXLAKE_`` variable (environment or ``.env``) that sets nothing."""
    found = unknown_variables(Settings, os.environ) + unknown_variables(Settings, dotenv_variables(Path(".env")), ".env")
    for variable in found:
        print(f"txlake: warning: {variable.warning()}", file=sys.stderr)


CLIENT_LOGGERS = ("aiokafka",)
"""Libraries whose errors a short command reports itself, as its one line: their own log lines would repeat it."""


@contextlib.contextmanager
def _client_logs_muted(debug: bool) -> Iterator[None]:
    """Mute :data:`CLIENT_LOGGERS` below CRITICAL for the block (not with ``--debug``)."""
    loggers = [logging.getLogger(name) for name in CLIENT_LOGGERS]
    levels = [logger.level for logger in loggers]
    if not debug:
        for logger in loggers:
            logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _configure_logging(debug: bool) -> None:
    """Library warnings of a short command go to stderr as ``txlake: WARNING: …`` (the worker logs its own way)."""
    logging.basicConfig(level=logging.INFO if debug else logging.WARNING,
                        format="txlake: %(levelname)s: %(name)s: %(message)s" if debug else "txlake: %(levelname)s: %(message)s")
    quiet_expected_noise()
    if not debug:
        for name in CLIENT_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit status (argparse exits 2 itself on a usage error)."""
    args = build_parser().parse_args(argv)
    if args.command == "worker":
        quiet_expected_noise()  # Faust configures the handlers
    else:
        _configure_logging(args.debug)
    _warn_unknown_variables()
    settings = None
    try:
        settings = Settings()
        return args.run(settings, args)
    except (Exception, KeyboardInterrupt, asyncio.CancelledError) as exc:  # noqa: BLE001 - every failure: one line
        if args.debug:
            traceback.print_exc()
        failure = describe_failure(exc, settings)
        print(f"txlake: {failure.message}", file=sys.stderr)
        return failure.exit_code


if __name__ == "__main__":
    sys.exit(main())
