"""The demo's own steps: reset what a previous demo made in Kafka, and print the figures of a run.

    python -m tools.demo reset-kafka   # delete the demo's topics and consumer groups
    python -m tools.demo figures       # rows, distinct ids, dimension and fact totals

Used by ``scripts/demo-reset.sh`` (``make demo`` before each run, ``make clean``) and
``scripts/demo.sh``. Both read the same settings as ``txlake`` (``TXLAKE_*``).

**Reset** deletes, on the configured broker: every feed topic, the dead-letter topic, the
deltas topic, every topic of the worker's Faust app (``<group_id>-control-…``: the tables'
state changelogs), and every consumer group a worker uses (:func:`demo_groups`; among them the
derived streams' position, which would otherwise point past the new topics' ends). It refuses
(exit 2) when Kafka, MySQL or the lake is not on this host -- the demo resets only local
services -- and (exit 1) when a worker is still a member of any of them. It waits until the
topics are gone, so ``txlake topics`` can create them again at once.

**Figures** are what a run produced, free of timestamps and offsets: the same for every run
with the same ``DEMO_COUNT`` and ``--now``; a second run that doubled the data would show it
(rows above distinct ids, totals doubled).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import socket
import sys
import time

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, for_code
from aiokafka.protocol.admin import DeleteGroupsRequest

from app.core.errors import ConfigurationError, TxlakeError
from app.core.feeds import Feed, load_feeds
from app.core.security import kafka_client_options
from app.core.settings import Settings

__all__ = ["demo_groups", "demo_topics", "figures", "reset_kafka"]

_NON_EMPTY_GROUP = 68
_GROUP_ID_NOT_FOUND = 69
_TOPIC_DELETION_TIMEOUT_S = 60.0


def _is_local(host: str) -> bool:
    """Whether ``host`` is this machine (loopback), by name or address."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
        except OSError:
            return False


def require_local_services(settings: Settings) -> None:
    """Raise :class:`ConfigurationError` unless Kafka, MySQL and the lake are local: the demo never resets others."""
    hosts = [server.strip().rsplit(":", 1)[0].strip("[]") for server in settings.kafka.bootstrap_servers.split(",")]
    remote = [f"Kafka {host}" for host in hosts if host and not _is_local(host)]
    if not _is_local(settings.mysql.host):
        remote.append(f"MySQL {settings.mysql.host}")
    if settings.lake.is_s3:
        remote.append(f"lake {settings.lake.root}")
    if remote:
        raise ConfigurationError(f"the demo resets only local services, not {', '.join(remote)}")


def demo_groups(settings: Settings) -> list[str]:
    """Every consumer group a worker of the demo's settings uses, in any role (app.runtime.worker.role_groups):
    the stream fetcher's, the Faust app's, the table agent's, the fact landing's and the Faust app of
    a streams-role worker, and the derived streams' position (a group without members)."""
    group = settings.kafka.group_id
    return [group, settings.faust_app_id, settings.table_group_id, f"{group}-facts", f"{group}-streams-control",
            settings.derived_streams_group]


def demo_topics(settings: Settings, feeds: tuple[Feed, ...], existing: set[str]) -> list[str]:
    """The demo's topics among ``existing``: feeds, dead letters, deltas, and the Faust app's internal topics."""
    named = {feed.topic for feed in feeds} | {settings.dead_letter_topic, settings.table_deltas_topic}
    internal_prefix = f"{settings.faust_app_id}-"
    return sorted(topic for topic in existing if topic in named or topic.startswith(internal_prefix))


async def _delete_groups(admin: AIOKafkaAdminClient, groups: list[str]) -> list[str]:
    """Delete ``groups`` (those that exist); returns the deleted. Raises if one still has members."""
    deleted = []
    for group in groups:
        coordinator = await admin.find_coordinator(group)
        response = await admin._send_request_to_node(coordinator, DeleteGroupsRequest([group]))  # noqa: SLF001 - aiokafka has no public API for it
        for name, code in response.results:
            if code == 0:
                deleted.append(name)
            elif code == _NON_EMPTY_GROUP:
                raise TxlakeError(f"a worker of consumer group {name} is still running: stop it first")
            elif code != _GROUP_ID_NOT_FOUND:
                raise for_code(code)(f"deleting consumer group {name}")
    return deleted


async def reset_kafka(settings: Settings) -> tuple[list[str], list[str]]:
    """Delete the demo's consumer groups and topics; returns (topics, groups) deleted. See the module docstring.

    Groups go first: Kafka refuses to delete a group with members, which stops the reset before
    a running worker loses its topics.
    """
    require_local_services(settings)
    feeds = load_feeds(settings)
    admin = AIOKafkaAdminClient(**kafka_client_options(settings.kafka))
    await admin.start()
    try:
        groups = await _delete_groups(admin, demo_groups(settings))
        topics = demo_topics(settings, feeds, set(await admin.list_topics()))
        if topics:
            await admin.delete_topics(topics)
            deadline = time.monotonic() + _TOPIC_DELETION_TIMEOUT_S
            while set(topics) & set(await admin.list_topics()):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"Kafka has not deleted {topics} after {_TOPIC_DELETION_TIMEOUT_S:.0f} s")
                await asyncio.sleep(0.2)
    finally:
        await admin.close()
    return topics, groups


def _lake_figures(settings: Settings, feeds: tuple[Feed, ...]) -> list[tuple[str, str]]:
    import duckdb

    from app.ops.report import lake_glob

    lines = []
    for feed in feeds:
        if feed.is_table:
            continue
        files = list((settings.lake.root / feed.dataset).glob("year=*/month=*/day=*/*.parquet"))  # type: ignore[operator]
        if not files:
            lines.append((f"lake {feed.dataset}", "0 rows"))
            continue
        amount = "line_total" if feed.record == "flattened_line" else "amount"
        rows, ids, total = duckdb.sql(
            f"SELECT count(*), count(DISTINCT transaction_id), sum({amount}) "
            f"FROM read_parquet('{lake_glob(settings.lake.root, feed)}', hive_partitioning = true)"
        ).fetchall()[0]
        lines.append((f"lake {feed.dataset}", f"{rows:,} rows, {ids:,} distinct transaction ids, {amount} {total:,.2f}"))
    return lines


_FACT_TOTALS = {
    "fact_user_transaction_summary": ("total_amount", "transaction_count"),
    "fact_user_transaction_summary_eur": ("total_amount_eur", "transaction_count"),
    "fact_payment_method_totals": ("total_amount", "transaction_count"),
    "fact_product_purchase_counts": ("total_revenue", "purchase_count"),
}


def _warehouse_figures(settings: Settings) -> list[tuple[str, str]]:
    import pymysql

    m = settings.mysql
    connection = pymysql.connect(host=m.host, port=m.port, user=m.user, password=m.password.get_secret_value(),
                                 database=m.database, connect_timeout=m.connect_timeout_s)
    lines = []
    try:
        with connection.cursor() as cursor:
            for dimension in ("dim_users", "dim_payment_methods"):
                cursor.execute(f"SELECT count(*) FROM {dimension}")
                lines.append((f"warehouse {dimension}", f"{cursor.fetchone()[0]:,} rows"))
            for fact, (amount, count) in _FACT_TOTALS.items():
                cursor.execute(f"SELECT count(*), coalesce(sum({amount}), 0), coalesce(sum({count}), 0) "
                               f"FROM {fact} WHERE snapshot_version = 0")
                rows, total, counted = cursor.fetchone()
                lines.append((f"warehouse {fact}", f"{rows:,} live rows, {amount} {total:,.2f}, {count} {counted:,}"))
    finally:
        connection.close()
    return lines


async def _dead_letters(settings: Settings) -> int:
    """Records the dead-letter topic holds (end minus start offsets over its partitions)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    admin = AIOKafkaAdminClient(**kafka_client_options(settings.kafka))
    await admin.start()
    try:
        if settings.dead_letter_topic not in await admin.list_topics():
            return 0
        (described,) = await admin.describe_topics([settings.dead_letter_topic])
    finally:
        await admin.close()
    tps = [TopicPartition(settings.dead_letter_topic, p["partition"]) for p in described["partitions"]]
    consumer = AIOKafkaConsumer(**kafka_client_options(settings.kafka), enable_auto_commit=False)
    await consumer.start()
    try:
        ends, starts = await consumer.end_offsets(tps), await consumer.beginning_offsets(tps)
    finally:
        await consumer.stop()
    return sum(ends[tp] - starts[tp] for tp in tps)


def figures(settings: Settings) -> list[tuple[str, str]]:
    """(what, figure) lines of the landed demo: lake rows and ids, dimensions, live fact totals, dead letters."""
    feeds = load_feeds(settings)
    lines = _lake_figures(settings, feeds) + _warehouse_figures(settings)
    dead = asyncio.run(_dead_letters(settings))
    lines.append(("dead letters", f"{dead:,} record{'' if dead == 1 else 's'}"))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=("reset-kafka", "figures"), help="what to do")
    parser.add_argument("--if-running", action="store_true",
                        help="reset-kafka: a broker that does not answer is skipped with a note, not an error")
    args = parser.parse_args(argv)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # failures are reported as one line below
    settings = Settings()
    try:
        if args.step == "reset-kafka":
            try:
                topics, groups = asyncio.run(reset_kafka(settings))
            except KafkaConnectionError:
                if not args.if_running:
                    raise
                print(f"[demo] Kafka at {settings.kafka.bootstrap_servers} is not running: its demo topics stay "
                      f"(start it with make up and reset again to remove them)")
                return 0
            print(f"[demo] deleted {len(topics)} topics{': ' + ', '.join(topics) if topics else ''}")
            print(f"[demo] deleted consumer groups: {', '.join(groups) or '(none existed)'}")
        else:
            lines = figures(settings)
            width = max(len(what) for what, _ in lines)
            print("[demo] figures (the same on every run with the same count):")
            for what, figure in lines:
                print(f"  {what:<{width}}  {figure}")
    except Exception as exc:  # noqa: BLE001 - one line, like txlake
        from app.ops.failures import describe_failure

        failure = describe_failure(exc, settings)
        print(f"txlake demo: {failure.message}", file=sys.stderr)
        return failure.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
