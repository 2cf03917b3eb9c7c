"""CPU per message of the worker's own stages, without Kafka or MySQL (an A/B tool for a busy machine).

``python -m bench.stages --transactions 20000`` builds the four stream topics' values in memory
(the generator, as ``txlake produce`` would write them), then, per feed and batch of
``flush_size`` messages, times with the process CPU clock:

- **decode**: ``FeedLanding.decode`` (fast decoder, pydantic for what it refuses);
- **lake**: ``LakeSink.write_sync`` into a temporary local lake (Arrow table, day split, Parquet
  files, ledger; fsync on, as the worker runs it);
- **dimensions**: ``latest_rows`` of the warehouse dimensions for the feeds that feed them (the
  rows the warehouse sink upserts; the SQL round trip itself is not included).

The best of ``--repeat`` runs is printed as µs per message. CPU time, unlike the end-to-end
benchmark's wall clock, barely moves when other jobs share the machine, so two commits can be
compared on a busy machine; the end-to-end figures still need ``make bench``.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime

from aiokafka.structs import ConsumerRecord

from app.core.feeds import Feed, load_feeds
from app.core.settings import Settings
from app.lake.sink import LakeSink
from app.runtime.landing import FeedLanding
from models.derive import Blacklist, anonymize, blacklisted, flatten
from models.dimensions import DIMENSIONS, latest_rows
from models.transaction import to_wire
from tools.loadgen import generate

STAGES = ("decode", "lake", "dimensions")


def build_messages(feeds: tuple[Feed, ...], transactions: int) -> dict[Feed, list[ConsumerRecord]]:
    """Each feed's messages as the consumer would return them (one partition, offsets from 0)."""
    by_record = {feed.record: feed for feed in feeds if feed.record != "transaction"}
    plain, masked = (feed for feed in feeds if feed.record == "transaction")
    blacklist = Blacklist(countries=frozenset({"RU"}))  # the benchmark's blacklist
    values: dict[Feed, list[bytes]] = defaultdict(list)
    for tx in generate(transactions, seed=1, now=datetime.now(UTC)):
        values[plain].append(to_wire(tx))
        values[by_record["flattened_line"]].extend(to_wire(line) for line in flatten(tx))
        values[masked].append(to_wire(anonymize(tx, b"bench-stages")))
        flagged = blacklisted(tx, blacklist)
        if flagged is not None:
            values[by_record["blacklisted_transaction"]].append(to_wire(flagged))
    return {
        feed: [ConsumerRecord(feed.topic, 0, offset, 0, 0, None, value, None, 0, len(value), ())
               for offset, value in enumerate(feed_values)]
        for feed, feed_values in values.items()
    }


def measure(messages: dict[Feed, list[ConsumerRecord]], flush_size: int) -> dict[str, float]:
    """CPU seconds per stage for landing every message once into a fresh lake."""
    spent = dict.fromkeys(STAGES, 0.0)
    with tempfile.TemporaryDirectory(prefix="txlake-stages-") as root:
        lake = LakeSink(root)
        for feed, feed_messages in messages.items():
            landing = FeedLanding(feed, [lake], dead_letters=None, backoff=None)  # type: ignore[arg-type]
            dimensions = [DIMENSIONS[table] for table in feed.warehouse]
            for start in range(0, len(feed_messages), flush_size):
                t0 = time.process_time()
                batch, _rejected = landing.decode(0, feed_messages[start : start + flush_size])
                t1 = time.process_time()
                lake.write_sync(batch)
                t2 = time.process_time()
                for dimension in dimensions:
                    latest_rows(dimension, batch.records)
                t3 = time.process_time()
                spent["decode"] += t1 - t0
                spent["lake"] += t2 - t1
                spent["dimensions"] += t3 - t2
    return spent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__.split("\n")[0])
    parser.add_argument("--transactions", type=int, default=20_000, help="transactions to generate (default 20,000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the best is reported (default 3)")
    args = parser.parse_args(argv)
    settings = Settings()
    messages = build_messages(load_feeds(settings), args.transactions)
    total = sum(map(len, messages.values()))
    gc.freeze()  # as the worker does after start-up: the inputs are not what is measured
    runs = [measure(messages, settings.batching.flush_size) for _ in range(args.repeat)]
    best = min(runs, key=lambda spent: sum(spent.values()))
    figures = ", ".join(f"{stage} {best[stage] / total * 1e6:.2f}" for stage in STAGES)
    print(f"{total:,} messages ({args.transactions:,} transactions), CPU µs per message, best of "
          f"{args.repeat}: {figures}; total {sum(best.values()) / total * 1e6:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
