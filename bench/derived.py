"""What the derived streams cost the worker: CPU-µs per transaction, with and without stream derivation.

    python -m bench.derived [--transactions 100000] [--rounds 2] [--partitions 4]   (make bench-derived)

Each round runs the same load twice, back to back, in fresh topics, consumer groups and database,
the order alternating between rounds (off/on, then on/off) so a drift of the shared machine
does not favour one side:

* **off** -- ``streams.derive=false``: the load generator writes the transactions *and* the three
  derived streams (as ksqlDB would); the worker lands the four stream feeds.
* **on** -- ``streams.derive=true``: the load generator writes the transactions only; the worker
  derives the three streams (Kafka transactions, :mod:`app.derived.sink`) and lands the same four
  feeds.

Both land the same records, so the difference is the derivation's own cost. The table derivation is
off in both (it has its own benchmark, ``bench/tables.py``). The worker is started and ready before
the load is produced; its CPU (user + system, every thread, ``/proc/<pid>/stat``) is counted from
then until every feed has landed (``txlake progress``), divided by the transactions produced. An
idle worker still spends CPU (Faust's timers, the lag poll): its idle rate, measured for
``IDLE_S`` seconds before the load, times the run's wall time is subtracted (both figures are kept).
The machine is shared: compare the two sides of one round, not figures of different days.

Also measured without Kafka: the encoder alone (:class:`models.derived_messages.DerivedMessages`
on decoded transactions), CPU-µs per transaction.

Writes ``bench/results/derived-LATEST.{json,md}`` and ``LATEST.md`` (:mod:`bench.report`) and prints
the page (docs/derived-streams.md quotes it).
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
    stream_topics,
)
from bench.probes import machine_cpu, proc_cpu_s
from bench.report import write_latest

NOW = datetime.now(UTC)
IDLE_S = 8.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.derived", description=__doc__.split("\n\n")[0])
    parser.add_argument("--transactions", type=int, default=100_000, help="transactions per run")
    parser.add_argument("--rounds", type=int, default=2, help="pairs of runs (off/on), order alternating")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--window-ms", type=int, default=1000, help="batching.rotate_interval_ms of the worker")
    return parser.parse_args(argv)


def encoder_cost(transactions: int = 20_000) -> dict[str, float]:
    """CPU-µs per transaction of the derived-stream encoder alone (best of 3), on decoded twins."""
    from app.core.settings import Settings
    from models.derived_messages import DERIVATIONS, DerivedMessages
    from models.transaction import Transaction, to_wire
    from models.wire import fast_decoder
    from tools.loadgen import generate

    settings = Settings(blacklist={"countries": ["RU"]})
    encoder = DerivedMessages(DERIVATIONS, settings.anonymization.key.get_secret_value().encode(), settings.blacklist)
    decode = fast_decoder(Transaction)
    records = [decode(to_wire(tx)) for tx in generate(transactions, seed=4, now=NOW)]
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        messages = sum(len(encoder.values(tx)) for tx in records)
        best = min(best, time.process_time() - started)
    return {"cpu_us_per_transaction": best / transactions * 1e6, "messages_per_transaction": messages / transactions}


async def _wait_ready(port: int, worker: Any, timeout_s: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            assert worker.exit_code() is None, worker.log_tail()
            try:
                if (await client.get(f"http://127.0.0.1:{port}/readyz", timeout=5)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
    raise TimeoutError(f"the worker was not ready after {timeout_s:.0f}s")


async def one_run(derive: bool, args: argparse.Namespace) -> dict[str, Any]:
    """One load through one worker; its CPU per transaction (see the module docstring)."""
    from app.core.feeds import load_feeds
    from app.core.settings import Settings
    from app.ops.progress import wait_until_landed
    from app.ops.topics import create_topics
    from tools.loadgen import produce

    run = new_run(args.window_ms)
    run.env["TXLAKE_STREAMS__DERIVE"] = "true" if derive else "false"
    run.env["TXLAKE_LOG_FORMAT"] = "text"
    os.environ.update(run.env)  # every run sets the same keys
    settings = Settings()
    feeds = load_feeds(settings)
    topics = [feed.topic for feed in feeds] + [settings.dead_letter_topic]
    await create_database(run.database, settings.mysql.user)
    worker = None
    try:
        await create_topics(settings, feeds, args.partitions)
        worker = WorkerProcess(run.env, run.scratch / "worker.log").start()
        await _wait_ready(run.web_port, worker)
        idle_from = proc_cpu_s(worker.pid)
        await asyncio.sleep(IDLE_S)
        cpu_before, started = proc_cpu_s(worker.pid), time.monotonic()
        busy_before = machine_cpu()
        idle_rate = (cpu_before - idle_from) / IDLE_S
        report = await produce(
            settings.kafka.bootstrap_servers, stream_topics(feeds),
            args.transactions, seed=1, rate=None, now=NOW, derived=not derive,
            anonymization_key=settings.anonymization.key.get_secret_value().encode(), blacklist=settings.blacklist,
        )
        await wait_until_landed(settings, feeds, timeout_s=1800, poll_s=0.25)
        elapsed, cpu = time.monotonic() - started, proc_cpu_s(worker.pid) - cpu_before
        busy, total = (now - before for now, before in zip(machine_cpu(), busy_before, strict=True))
        rows = await _lake_rows(settings, feeds)
        load_cpu = cpu - idle_rate * elapsed
        result = {
            "derive": derive,
            "transactions": args.transactions,
            "produced_messages": sum(report.counts.values()),
            "lake_rows": rows,
            "wall_s": elapsed,
            "worker_cpu_s": cpu,
            "idle_cpu_per_s": idle_rate,
            "machine_busy": busy / total if total else None,
            "raw_cpu_us_per_transaction": cpu / args.transactions * 1e6,
            "cpu_us_per_transaction": load_cpu / args.transactions * 1e6,
        }
        log(f"  derive={'on ' if derive else 'off'}: {result['cpu_us_per_transaction']:.1f} worker CPU-µs/tx "
            f"(raw {result['raw_cpu_us_per_transaction']:.1f}, idle {idle_rate * 1000:.0f} ms/s), {elapsed:.1f} s wall, "
            f"machine {result['machine_busy']:.0%} busy, lake rows {sum(rows.values()):,}")
        return result
    finally:
        if worker is not None:
            worker.stop()
        await delete_topics(settings.kafka.bootstrap_servers, topics)
        await drop_database(run.database, settings.mysql.user)
        shutil.rmtree(run.scratch, ignore_errors=True)


async def _lake_rows(settings: Any, feeds: tuple) -> dict[str, int]:
    import pyarrow.dataset as ds

    rows = {}
    for feed in feeds:
        if feed.is_table:
            continue
        path = Path(settings.lake.root) / feed.dataset
        rows[feed.name] = ds.dataset(path, format="parquet").count_rows() if path.exists() else 0
    return rows


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rounds = []
    for i in range(0, len(runs), 2):
        pair = {run["derive"]: run for run in runs[i : i + 2]}
        off, on = pair[False]["cpu_us_per_transaction"], pair[True]["cpu_us_per_transaction"]
        rounds.append({"off_us": off, "on_us": on, "derivation_us": on - off, "ratio_on_off": on / off})
    return {
        "rounds": rounds,
        "median_derivation_us": statistics.median(r["derivation_us"] for r in rounds),
        "median_ratio_on_off": statistics.median(r["ratio_on_off"] for r in rounds),
    }


def markdown(results: dict[str, Any]) -> str:
    machine, code = results["machine"], results["code"]
    lines = [
        "# Derived streams' cost (`make bench-derived`)",
        "",
        f"Measured {results['started_at']} with `python -m bench.derived --transactions {results['args']['transactions']:,} "
        f"--rounds {results['args']['rounds']}` ({results['args']['partitions']} partitions, window "
        f"{results['args']['window_ms']} ms), commit `{code['commit']}`"
        + (f" (+ local changes in {', '.join(code['worker_code_changed'])})" if code["worker_code_changed"] else "") + ".",
        f"Machine: {machine['nproc']} CPUs ({machine['cpu_model']}), {machine['memory_gib']} GiB; shared with other jobs "
        f"(load average {results['load_average'][0]:.1f} at the start).",
        "",
        "Worker CPU-µs per transaction while the load lands (the idle worker's CPU subtracted; raw in brackets):",
        "",
        "| round | derivation off | on | on − off (the derivation) | on ÷ off | machine busy (off / on) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    runs = results["runs"]
    for n, r in enumerate(results["summary"]["rounds"], start=1):
        pair = {run["derive"]: run for run in runs[2 * (n - 1) : 2 * n]}
        off, on = pair[False], pair[True]
        lines.append(
            f"| {n} | {r['off_us']:.1f} ({off['raw_cpu_us_per_transaction']:.1f}) | {r['on_us']:.1f} "
            f"({on['raw_cpu_us_per_transaction']:.1f}) | {r['derivation_us']:.1f} | {r['ratio_on_off']:.2f} | "
            f"{off['machine_busy']:.0%} / {on['machine_busy']:.0%} |"
        )
    s = results["summary"]
    lines += [
        f"| median | | | **{s['median_derivation_us']:.1f}** | **{s['median_ratio_on_off']:.2f}** | |",
        "",
        f"Encoder alone (no Kafka): {results['encoder']['cpu_us_per_transaction']:.1f} CPU-µs per transaction "
        f"({results['encoder']['messages_per_transaction']:.2f} derived messages per transaction).",
    ]
    return "\n".join(lines)


async def _amain(args: argparse.Namespace) -> dict[str, Any]:
    import os

    started_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()
    log("encoder alone")
    encoder = encoder_cost()
    runs = []
    for n in range(args.rounds):
        log(f"round {n + 1}/{args.rounds}")
        for derive in ((False, True) if n % 2 == 0 else (True, False)):
            runs.append(await one_run(derive, args))
    return {
        "started_at": started_at,
        "load_average": load,
        "args": vars(args),
        "machine": machine_info(),
        "code": git_state(),
        "encoder": encoder,
        "runs": runs,
        "summary": summarise(runs),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.chdir(REPO)
    results = asyncio.run(_amain(args))
    page = markdown(results)
    print(page)
    raw, summary = write_latest("derived", results, page)
    log(f"results: {raw.relative_to(REPO)}, {summary.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
