"""Delta against hive Parquet: the lake sink's landing throughput, back to back in one run.

``python -m bench.delta --transactions 50000`` (``make bench-delta``) builds the four stream feeds'
messages in memory (the generator, as ``txlake produce`` writes them), spreads them over
``--partitions`` partitions, decodes them once, then lands them -- only the lake sink is timed --
into a fresh local lake per variant:

- ``hive``: :class:`~app.lake.sink.LakeSink`, the default format, ``lake.fsync`` on (as deployed);
- ``hive-nofsync``: the same with ``lake.fsync = false`` (delta-rs does not fsync local files, so
  this is the like-for-like durability);
- ``delta``: :class:`~app.lake.delta_sink.DeltaLakeSink`, the group commit (one commit per flush of a feed);
- ``delta-per-partition``: the Delta sink with its group commit off (one commit per partition
  batch; the lanes still write at once and queue for the table's committer): what grouping saves.

The worker's shape: the four feeds land concurrently, each flush of a feed writes its partitions
concurrently (the agent's lanes) and the next flush starts when all of them landed. Variants run
interleaved (``hive, hive-nofsync, delta, delta-per-partition``, then again) ``--rounds`` times;
the median of each is reported as messages/s (wall clock) and CPU-µs per message (process CPU,
delta-rs's Rust threads included), with ratios against ``hive`` from the same round. The machine is
shared: the CPU figures and the ratios are what compare; messages/s moves with the neighbours.

Results: a table on stdout and ``bench/results/delta-LATEST.{json,md}`` (:mod:`bench.report`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from app.core.feeds import Feed, load_feeds
from app.core.settings import LakeSettings, Settings
from app.core.sink import Batch, Sink
from app.lake.delta_sink import DeltaLakeSink
from app.lake.sink import LakeSink
from app.runtime.landing import FeedLanding, RawMessage
from bench.report import write_latest
from bench.stages import build_messages

VARIANTS = ("hive", "hive-nofsync", "delta", "delta-per-partition")


def build_flushes(feeds: tuple[Feed, ...], transactions: int, partitions: int, flush_size: int) -> dict[Feed, list[list[Batch]]]:
    """Per feed, its flushes: each a list of one decoded batch per partition (round-robin spread)."""
    flushes: dict[Feed, list[list[Batch]]] = {}
    for feed, messages in build_messages(feeds, transactions).items():
        landing = FeedLanding(feed, [], dead_letters=None, backoff=None)  # type: ignore[arg-type]
        lanes = [messages[p::partitions] for p in range(partitions)]
        per_partition = []
        for p, lane in enumerate(lanes):
            relabelled = [RawMessage(p, i, m.key, m.value) for i, m in enumerate(lane)]
            per_partition.append([landing.decode(p, relabelled[s:s + flush_size])[0] for s in range(0, len(relabelled), flush_size)])
        flushes[feed] = [[batches[i] for batches in per_partition if i < len(batches)]
                         for i in range(max(map(len, per_partition)))]
    return flushes


def _sink(variant: str, root: str) -> Sink:
    if variant.startswith("hive"):
        return LakeSink(root, fsync=variant == "hive")
    return DeltaLakeSink(LakeSettings(root=root, format="delta"), group_commits=variant != "delta-per-partition")


async def _land(sink: Sink, flushes: dict[Feed, list[list[Batch]]], batch_s: list[float], flush_s: list[float]) -> int:
    async def timed(batch: Batch) -> int:
        started = time.perf_counter()
        landed = await sink.write(batch)
        batch_s.append(time.perf_counter() - started)
        return landed

    async def feed_lane(feed_flushes: list[list[Batch]]) -> int:
        landed = 0
        for flush in feed_flushes:  # the next flush of a feed starts when all its partitions landed
            started = time.perf_counter()
            landed += sum(await asyncio.gather(*(timed(batch) for batch in flush)))
            flush_s.append(time.perf_counter() - started)
        return landed

    return sum(await asyncio.gather(*(feed_lane(f) for f in flushes.values())))


def run_variant(variant: str, flushes: dict[Feed, list[list[Batch]]]) -> dict[str, float]:
    """Land every flush into a fresh lake; wall and CPU time, records, commits, latency, bytes."""
    messages = sum(b.last_offset - b.first_offset + 1 for fl in flushes.values() for flush in fl for b in flush)
    with tempfile.TemporaryDirectory(prefix=f"txlake-bench-{variant}-", dir=os.environ.get("TXLAKE_BENCH_DIR")) as root:
        sink = _sink(variant, root)
        batch_s: list[float] = []
        flush_s: list[float] = []
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        landed = asyncio.run(_land(sink, flushes, batch_s, flush_s))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        data_bytes = sum(p.stat().st_size for p in Path(root, "streams").rglob("*.parquet") if "_delta_log" not in p.parts)
        commits = _delta_commits(Path(root)) if variant.startswith("delta") else None
    batch_s.sort()
    flush_s.sort()
    return {
        "messages": messages,
        "records": landed,
        "wall_s": wall,
        "cpu_s": cpu,
        "messages_per_s": messages / wall,
        "cpu_us_per_message": cpu / messages * 1e6,
        "batch_p50_ms": batch_s[len(batch_s) // 2] * 1000,
        "batch_p95_ms": batch_s[int(len(batch_s) * 0.95)] * 1000,
        "flush_p50_ms": flush_s[len(flush_s) // 2] * 1000,
        "flush_p95_ms": flush_s[int(len(flush_s) * 0.95)] * 1000,
        "data_bytes": data_bytes,
        "commits": commits,
    }


def _delta_commits(root: Path) -> int:
    return sum(len(list(log.glob("*.json"))) for log in root.glob("streams/*/_delta_log"))


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.delta", description=__doc__.split("\n")[0])
    parser.add_argument("--transactions", type=int, default=50_000, help="transactions to generate (default 50,000)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions per topic (default 4)")
    parser.add_argument("--flush-size", type=int, default=None, help="records per partition batch (default: batching.flush_size)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every variant; medians reported (default 3)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {','.join(VARIANTS)}")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/results/delta-LATEST.*")
    args = parser.parse_args(argv)
    settings = Settings()
    flush_size = args.flush_size or settings.batching.flush_size
    variants = [v for v in args.variants.split(",") if v]
    started = datetime.now(UTC)
    flushes = build_flushes(load_feeds(settings), args.transactions, args.partitions, flush_size)
    gc.freeze()
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    for round_ in range(args.rounds):
        for variant in variants:
            result = run_variant(variant, flushes)
            runs[variant].append(result)
            print(f"round {round_ + 1} {variant:<20} {result['messages_per_s']:>9,.0f} msg/s  "
                  f"{result['cpu_us_per_message']:6.2f} CPU-µs/msg  flush p50 {result['flush_p50_ms']:.0f} ms", flush=True)
    summary = {v: {k: statistics.median(r[k] for r in rs) for k in rs[0] if rs[0][k] is not None} for v, rs in runs.items()}
    ratios = {}
    if "hive" in runs:
        for v in variants:
            ratios[v] = {
                "messages_per_s": statistics.median(
                    r["messages_per_s"] / h["messages_per_s"] for r, h in zip(runs[v], runs["hive"], strict=True)
                ),
                "cpu_us_per_message": statistics.median(
                    r["cpu_us_per_message"] / h["cpu_us_per_message"] for r, h in zip(runs[v], runs["hive"], strict=True)
                ),
            }
    flushes_per_feed = {feed.name: len(fl) for feed, fl in flushes.items()}
    print(f"\n{summary[variants[0]]['messages']:,.0f} messages ({args.transactions:,} transactions, {args.partitions} partitions, "
          f"{flush_size} records per partition batch, {sum(flushes_per_feed.values())} flushes), median of {args.rounds} rounds")
    print(f"{'variant':<20} {'msg/s':>9} {'CPU-µs/msg':>10} {'÷hive msg/s':>11} {'÷hive CPU':>9} {'batch p50/p95 ms':>16} {'flush p50/p95 ms':>16} {'commits':>7} {'MB':>6}")
    for v in variants:
        s, r = summary[v], ratios.get(v, {})
        print(f"{v:<20} {s['messages_per_s']:>9,.0f} {s['cpu_us_per_message']:>10.2f} {r.get('messages_per_s', 0):>11.2f} "
              f"{r.get('cpu_us_per_message', 0):>9.2f} {s['batch_p50_ms']:>7.0f}/{s['batch_p95_ms']:<8.0f} "
              f"{s['flush_p50_ms']:>7.0f}/{s['flush_p95_ms']:<8.0f} "
              f"{s.get('commits', 0) or '-':>7} {s['data_bytes'] / 1e6:>6.1f}")
    document = {
        "kind": "delta-vs-hive",
        "started_at": started.isoformat(timespec="seconds"),
        "commit": _git_commit(),
        "machine": {"cpu": _cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "deltalake": _version("deltalake"), "pyarrow": _version("pyarrow")},
        "transactions": args.transactions,
        "partitions": args.partitions,
        "flush_size": flush_size,
        "flushes_per_feed": flushes_per_feed,
        "rounds": args.rounds,
        "runs": runs,
        "median": summary,
        "ratio_to_hive": ratios,
    }
    if not args.no_write:
        raw, page = write_latest("delta", document, markdown(document, variants))
        print(f"written {raw}, {page}")
    return 0


def markdown(document: dict, variants: list[str]) -> str:
    """The results page: one row per variant, medians, ratios to hive Parquet measured in the same run."""
    m = document["machine"]
    lines = [
        "# Delta against hive Parquet (`make bench-delta`)",
        "",
        f"Measured {document['started_at']} on {m['cores']} cores ({m['cpu']}), Python {m['python']}, "
        f"deltalake {m['deltalake']}, pyarrow {m['pyarrow']}; commit `{document['commit']}`. "
        f"{document['transactions']:,} transactions, {document['partitions']} partitions, "
        f"{document['flush_size']} records per partition batch; median of {document['rounds']} interleaved rounds. "
        "The lake sink alone (no Kafka): the figures compare the formats, not the whole worker.",
        "",
        "| variant | messages/s | CPU-µs/message | ÷ hive, messages/s | ÷ hive, CPU | flush p50 / p95 ms | commits | MB on disk |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for v in variants:
        s, r = document["median"][v], document["ratio_to_hive"].get(v, {})
        lines.append(
            f"| {v} | {s['messages_per_s']:,.0f} | {s['cpu_us_per_message']:.2f} | {r.get('messages_per_s', 0):.2f} | "
            f"{r.get('cpu_us_per_message', 0):.2f} | {s['flush_p50_ms']:.0f} / {s['flush_p95_ms']:.0f} | "
            f"{s.get('commits', 0) or '-'} | {s['data_bytes'] / 1e6:.1f} |"
        )
    return "\n".join(lines) + "\n"


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    raise SystemExit(main())

