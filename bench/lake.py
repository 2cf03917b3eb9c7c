"""The lake's size and compaction benchmark: ``make bench-lake`` (= ``python -m bench.lake``).

    .venv/bin/python -m bench.lake [--transactions 200000] [--wide-days 40] [--partitions 4] [--keep]

Two loads, each in fresh topics, consumer groups, lakes and databases (like ``bench.run``):

* **benchmark** -- the load of ``make bench`` (``tools.loadgen`` defaults: events over 3 days, 5 %
  late arrivals);
* **wide** -- the same, with event times spread over ``--wide-days`` days (40): many more, smaller
  day files per batch.

For each: the records as JSON (the Kafka message values, ``models.wire.to_wire``, computed by
generating the same seeded load again), the lake after ``txlake worker`` landed it (Snappy, as
written; the same files re-encoded with ZSTD beside it), and after ``txlake lake compact`` with
Snappy and, on a hard-linked copy, with ZSTD: bytes per dataset and in all, the JSON/lake ratios,
files per day. Compaction throughput is rows per second of wall time and CPU-µs per row of the
``txlake lake compact`` process (its own rusage). ``txlake verify`` must pass after compaction.

Landing throughput while compaction runs (benchmark load only): the same topics landed three
times back to back by a fresh ``txlake worker`` (new group, lake, database): without compaction,
with ``txlake lake compact`` running in a loop beside it the whole time (on copies of the first
lake: a compaction that never pauses, the worst case for the worker), and without again. Reported
as messages/s and the worker's CPU-µs per message; the machine is shared, so compare the ratios
measured back to back, and CPU per message before wall time.

Results: ``bench/results/lake-LATEST.{json,md}`` (:mod:`bench.report`), and the section
between ``<!-- bench-lake:start -->`` and ``<!-- bench-lake:end -->`` of ``docs/lake.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from bench.infra import (
    REPO,
    create_database,
    delete_groups,
    delete_topics,
    drop_database,
    git_state,
    log,
    machine_info,
    new_run,
    stream_topics,
    wait_for_leaders,
)
from bench.probes import proc_cpu_s
from bench.report import write_latest

DOCS = REPO / "docs" / "lake.md"
MARK_START, MARK_END = "<!-- bench-lake:start -->", "<!-- bench-lake:end -->"
TXLAKE = str(Path(sys.executable).parent / "txlake")
TARGETS = {"benchmark": 15.0, "wide": 10.0}  # JSON / lake after compaction, Snappy (issue 14)
SEED = 42


def _settings(env: dict[str, str]) -> Any:
    """Settings as a process with ``env`` would build them."""
    from app.core.settings import Settings

    saved = dict(os.environ)
    os.environ.update(env)
    try:
        return Settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


# ------------------------------------------------------------------------------------------ sizes


def json_bytes(transactions: int, now: datetime, days: int, late: float, settings: Any, topics: Any) -> dict[str, int]:
    """Bytes of the Kafka message values (JSON) of the load, per topic: the same records, generated again."""
    from models.transaction import to_wire
    from tools.loadgen import _stream_records, generate  # the producer's own record fan-out

    key = settings.anonymization.key.get_secret_value().encode()
    sizes: Counter[str] = Counter()
    for tx in generate(transactions, seed=SEED, now=now, days=days, late_fraction=late):
        for topic, record in _stream_records(tx, topics, key, settings.blacklist):
            sizes[topic] += len(to_wire(record))
    return dict(sizes)


def lake_summary(root: Path) -> dict[str, dict[str, Any]]:
    """Per stream dataset: data files, bytes, rows, and files per day (mean, median, max)."""
    out: dict[str, dict[str, Any]] = {}
    for dataset_dir in sorted((root / "streams").iterdir()):
        files = sorted(dataset_dir.glob("year=*/month=*/day=*/*.parquet"))
        per_day = Counter(f.parent for f in files)
        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        counts = list(per_day.values()) or [0]
        out[dataset_dir.name] = {
            "files": len(files),
            "bytes": sum(f.stat().st_size for f in files),
            "rows": rows,
            "days": len(per_day),
            "files_per_day_mean": round(statistics.mean(counts), 1),
            "files_per_day_median": statistics.median(counts),
            "files_per_day_max": max(counts),
            "rows_per_file": round(rows / len(files), 1) if files else 0,
        }
    return out


def reencoded_bytes(root: Path, compression: str) -> dict[str, int]:
    """Per dataset: the bytes of the same files (same boundaries) written with another codec."""
    out: dict[str, int] = {}
    for dataset_dir in sorted((root / "streams").iterdir()):
        total = 0
        for path in dataset_dir.glob("year=*/month=*/day=*/*.parquet"):
            sink = pa.BufferOutputStream()
            pq.write_table(pq.read_table(path), sink, compression=compression)
            total += sink.tell()
        out[dataset_dir.name] = total
    return out


# ------------------------------------------------------------------------------------------ landing


async def land(env: dict[str, str], scratch: Path, label: str, timeout_s: float = 1800) -> dict[str, Any]:
    """Start ``txlake worker`` with ``env``; time it until every feed landed in every sink; stop it."""
    from app.core.feeds import load_feeds
    from app.ops.progress import feed_progress

    settings = _settings(env)
    feeds = load_feeds(settings)
    rows = await feed_progress(settings, feeds)
    messages = sum(r.last_offset + 1 for r in rows)
    log_path = scratch / f"worker-{label}.log"
    load_before = os.getloadavg()[0]
    with open(log_path, "wb") as handle:
        started = time.monotonic()
        worker = subprocess.Popen([TXLAKE, "worker"], env={**os.environ, **env}, cwd=scratch, stdout=handle,
                                  stderr=subprocess.STDOUT)
    try:
        while True:
            if worker.poll() is not None:
                raise RuntimeError(f"worker {label} exited with {worker.returncode}: {log_path.read_text()[-2000:]}")
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"worker {label} did not land everything in {timeout_s:.0f}s")
            rows = await feed_progress(settings, feeds)
            if rows and all(r.landed for r in rows):
                break
            await asyncio.sleep(0.25)
        seconds = time.monotonic() - started
        cpu_s = proc_cpu_s(worker.pid)
    finally:
        worker.terminate()
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    result = {
        "label": label,
        "messages": messages,
        "seconds": round(seconds, 2),
        "msg_per_s": round(messages / seconds),
        "worker_cpu_s": round(cpu_s, 2) if cpu_s is not None else None,
        "worker_cpu_us_per_msg": round(cpu_s * 1e6 / messages, 2) if cpu_s else None,
        "load_average_1m": [round(load_before, 1), round(os.getloadavg()[0], 1)],
    }
    log(f"  landing {label}: {messages:,} messages in {seconds:.1f}s = {result['msg_per_s']:,}/s, "
        f"worker {result['worker_cpu_us_per_msg']} CPU-µs/message")
    return result


# ------------------------------------------------------------------------------------------ compaction


def compact(env: dict[str, str], root: Path, **extra: str) -> dict[str, Any]:
    """``txlake lake compact --json`` over every stream dataset; wall and CPU time of the process."""
    started = time.monotonic()
    process = subprocess.Popen([TXLAKE, "lake", "compact", "--json"], env={**os.environ, **env,
                               "TXLAKE_LAKE__ROOT": str(root), **extra}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = process.communicate()
    _, _, usage = os.wait4(process.pid, 0) if process.returncode is None else (0, 0, None)
    seconds = time.monotonic() - started
    if process.returncode != 0:
        raise RuntimeError(f"txlake lake compact failed ({process.returncode}): {err.decode()[-2000:]}")
    results = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    done = [r for r in results if r["status"] == "compacted"]
    rows = sum(r["rows"] for r in done)
    cpu_s = sum(r["cpu_seconds"] for r in done)
    return {
        "days_compacted": len(done),
        "days_other": Counter(r["status"] for r in results if r["status"] != "compacted"),
        "rows": rows,
        "process_wall_s": round(seconds, 2),
        "compaction_wall_s": round(sum(r["seconds"] for r in done), 2),
        "compaction_cpu_s": round(cpu_s, 2),
        "rows_per_s": round(rows / sum(r["seconds"] for r in done)) if done else None,
        "cpu_us_per_row": round(cpu_s * 1e6 / rows, 2) if rows else None,
        "usage": None if usage is None else {"utime": usage.ru_utime, "stime": usage.ru_stime},
    }


class CompactionLoop(threading.Thread):
    """``txlake lake compact`` again and again on fresh hard-linked copies of ``pristine`` until stopped."""

    def __init__(self, env: dict[str, str], pristine: Path, scratch: Path) -> None:
        super().__init__(daemon=True)
        self.env, self.pristine, self.scratch = env, pristine, scratch
        self.runs: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                copy = self.scratch / f"compaction-copy-{len(self.runs)}"
                subprocess.run(["cp", "-al", str(self.pristine), str(copy)], check=True)
                self.runs.append(compact(self.env, copy))
                shutil.rmtree(copy, ignore_errors=True)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            self.error = exc


# ------------------------------------------------------------------------------------------ one load


async def run_load(name: str, transactions: int, days: int, late: float, partitions: int, with_landing: bool,
                   keep: bool) -> dict[str, Any]:
    from app.core.feeds import load_feeds
    from app.ops.topics import create_topics
    from tools.loadgen import produce

    run = new_run(rotate_interval_ms=1000)
    base_env = {**run.env, "TXLAKE_LAKE__COMPACTION__ENABLED": "false", "TXLAKE_LOG_FORMAT": "text"}
    settings = _settings(base_env)
    feeds = load_feeds(settings)
    now = datetime.now(UTC).replace(microsecond=0)
    databases, groups = [], []
    result: dict[str, Any] = {"load": name, "transactions": transactions, "days": days, "late_fraction": late,
                              "partitions": partitions, "now": now.isoformat()}
    try:
        log(f"[{name}] {transactions:,} transactions over {days} days ({late:.0%} late) into {partitions} partitions")
        created = await create_topics(settings, feeds, partitions)
        await wait_for_leaders(settings.kafka.bootstrap_servers, created, partitions)
        topics = stream_topics(feeds)
        produced = await produce(settings.kafka.bootstrap_servers, topics, transactions, seed=SEED, now=now, days=days,
                                 late_fraction=late, anonymization_key=settings.anonymization.key.get_secret_value().encode(),
                                 blacklist=settings.blacklist)
        log(f"  produced {sum(produced.counts.values()):,} messages in {produced.elapsed_s:.1f}s")
        sizes = json_bytes(transactions, now, days, late, settings, topics)
        by_topic = {feed.topic: feed.dataset.split("/", 1)[1] for feed in feeds}
        result["json_bytes"] = {by_topic[t]: b for t, b in sizes.items()}

        def landing_env(i: int) -> dict[str, str]:
            env = {**base_env, "TXLAKE_KAFKA__GROUP_ID": f"{run.group_id}-{i}", "TXLAKE_LAKE__ROOT": str(run.scratch / f"lake-{i}"),
                   "TXLAKE_DATADIR": str(run.scratch / f"state-{i}"), "TXLAKE_MYSQL__DATABASE": f"{run.database}_{i}"}
            groups.append(env["TXLAKE_KAFKA__GROUP_ID"])
            databases.append(env["TXLAKE_MYSQL__DATABASE"])
            return env

        env0 = landing_env(0)
        await create_database(env0["TXLAKE_MYSQL__DATABASE"], settings.mysql.user)
        landings = [await land(env0, run.scratch, "without compaction")]
        lake = Path(env0["TXLAKE_LAKE__ROOT"])
        pristine, zstd_lake = run.scratch / "lake-pristine", run.scratch / "lake-zstd"
        subprocess.run(["cp", "-al", str(lake), str(pristine)], check=True)
        subprocess.run(["cp", "-al", str(lake), str(zstd_lake)], check=True)
        result["before"] = lake_summary(lake)
        result["before_zstd_bytes"] = reencoded_bytes(lake, "zstd")
        log("  compacting (Snappy)")
        result["compaction_snappy"] = compact(env0, lake)
        result["after"] = lake_summary(lake)
        log("  compacting a copy (ZSTD)")
        result["compaction_zstd"] = compact(env0, zstd_lake, TXLAKE_LAKE__COMPACTION__COMPRESSION="zstd")
        result["after_zstd"] = lake_summary(zstd_lake)
        verify = subprocess.run([TXLAKE, "verify", "--json"], env={**os.environ, **env0}, capture_output=True, timeout=600)
        result["verify_after_compaction"] = {"exit": verify.returncode,
                                             "ok": json.loads(verify.stdout).get("ok") if verify.stdout else None}
        log(f"  txlake verify after compaction: {'ok' if verify.returncode == 0 else 'FAILED'}")
        if with_landing:
            env1 = landing_env(1)
            await create_database(env1["TXLAKE_MYSQL__DATABASE"], settings.mysql.user)
            loop = CompactionLoop(env0, pristine, run.scratch)
            loop.start()
            await asyncio.sleep(2)  # the first compaction is under way before the worker starts
            during = await land(env1, run.scratch, "while compaction runs")
            loop.stopping.set()
            loop.join()
            if loop.error is not None:
                raise loop.error
            during["compactions_beside"] = len(loop.runs)
            during["compaction_rows_per_s_beside"] = (
                round(statistics.mean(r["rows_per_s"] for r in loop.runs)) if loop.runs else None)
            landings.append(during)
            env2 = landing_env(2)
            await create_database(env2["TXLAKE_MYSQL__DATABASE"], settings.mysql.user)
            landings.append(await land(env2, run.scratch, "without compaction (again)"))
        result["landing"] = landings
        return result
    finally:
        if not keep:
            await delete_topics(settings.kafka.bootstrap_servers, [f.topic for f in feeds] + [settings.dead_letter_topic])
            delete_groups(settings.kafka.bootstrap_servers, groups, run.scratch)
            for database in databases:
                await drop_database(database, settings.mysql.user)
            shutil.rmtree(run.scratch, ignore_errors=True)


# ------------------------------------------------------------------------------------------ report


def ratios(load: dict[str, Any]) -> dict[str, dict[str, float]]:
    """JSON bytes / lake bytes, per dataset and in all, for each state of the lake."""
    states = {
        "before (Snappy)": {d: v["bytes"] for d, v in load["before"].items()},
        "before (ZSTD)": load["before_zstd_bytes"],
        "after compaction (Snappy)": {d: v["bytes"] for d, v in load["after"].items()},
        "after compaction (ZSTD)": {d: v["bytes"] for d, v in load["after_zstd"].items()},
    }
    out = {}
    for state, sizes in states.items():
        row = {d: round(load["json_bytes"][d] / sizes[d], 1) for d in sizes if sizes[d]}
        row["all"] = round(sum(load["json_bytes"].values()) / sum(sizes.values()), 1)
        out[state] = row
    return out


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f}"


def markdown(results: dict[str, Any]) -> str:
    m, g = results["machine"], results["git"]
    lines = [
        f"Run of {results['started_at']} on {m['nproc']} vCPU ({m['cpu_model']}), {m['memory_gib']} GiB, "
        f"commit `{g['commit']}`{' (+ local changes)' if g['worker_code_changed'] else ''}; "
        f"`python -m bench.lake --transactions {results['transactions']:,}`. The machine is shared with other jobs: "
        "compare CPU time and the ratios measured back to back, not wall time across runs.",
        "",
    ]
    for load in results["loads"]:
        r = ratios(load)
        target = TARGETS[load["load"]]
        got = r["after compaction (Snappy)"]["all"]
        lines += [
            f"### {load['load']} load: {load['transactions']:,} transactions over {load['days']} days, "
            f"{load['late_fraction']:.0%} late",
            "",
            f"JSON / lake bytes (higher is smaller); target after compaction with Snappy ≥ {target:g}×: "
            f"**{got}× — {'met' if got >= target else 'NOT met'}**.",
            "",
            "| dataset | JSON MB | before, Snappy | before, ZSTD | after, Snappy | after, ZSTD |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        datasets = sorted(load["json_bytes"])
        for d in [*datasets, "all"]:
            json_total = sum(load["json_bytes"].values()) if d == "all" else load["json_bytes"][d]
            cells = [f"{r[state].get(d, '-')}×" for state in r]
            lines.append(f"| {d} | {_mb(json_total)} | " + " | ".join(cells) + " |")
        before, after = load["before"], load["after"]
        lines += [
            "",
            "| dataset | files before → after | files per day before (mean / max) → after | rows per file before → after | MB before → after (Snappy) |",
            "|---|---:|---:|---:|---:|",
        ]
        for d in datasets:
            b, a = before[d], after[d]
            lines.append(
                f"| {d} | {b['files']:,} → {a['files']:,} | {b['files_per_day_mean']} / {b['files_per_day_max']} → "
                f"{a['files_per_day_mean']} / {a['files_per_day_max']} | {b['rows_per_file']:,} → {a['rows_per_file']:,} | "
                f"{_mb(b['bytes'])} → {_mb(a['bytes'])} |")
        for codec in ("snappy", "zstd"):
            c = load[f"compaction_{codec}"]
            lines.append("")
            lines.append(
                f"Compaction ({codec}): {c['rows']:,} rows in {c['days_compacted']} day partitions, "
                f"**{c['cpu_us_per_row']} CPU-µs per row** ({c['compaction_cpu_s']} CPU-s, i.e. "
                f"{round(1e6 / c['cpu_us_per_row']):,} rows/s per core), {c['rows_per_s']:,} rows/s of wall time on "
                f"this shared machine ({c['compaction_wall_s']} s, fsync included; the process {c['process_wall_s']} s "
                "with start-up and leases).")
        lines.append(f"`txlake verify` after compaction: {'ok' if load['verify_after_compaction']['ok'] else 'FAILED'}.")
        if len(load["landing"]) > 1:
            lines += ["", "Landing the same topics back to back (fresh group, lake, database each time):", "",
                      "| landing | messages/s | worker CPU-µs per message | machine load (1 min) at start / end | compaction beside it |",
                      "|---|---:|---:|---|---|"]
            for landing in load["landing"]:
                beside = (f"{landing['compactions_beside']} full compactions, {landing['compaction_rows_per_s_beside']:,} rows/s"
                          if "compactions_beside" in landing else "-")
                loads = " / ".join(str(v) for v in landing.get("load_average_1m", []))
                lines.append(f"| {landing['label']} | {landing['msg_per_s']:,} | {landing['worker_cpu_us_per_msg']} | {loads} | {beside} |")
            others = [x for x in load["landing"] if "compactions_beside" not in x]
            during = next(x for x in load["landing"] if "compactions_beside" in x)
            rate = during["msg_per_s"] / statistics.mean(x["msg_per_s"] for x in others)
            cpu = during["worker_cpu_us_per_msg"] / statistics.mean(x["worker_cpu_us_per_msg"] for x in others)
            spread = max(x["msg_per_s"] for x in others) / min(x["msg_per_s"] for x in others)
            lines.append("")
            lines.append(f"Landing while compaction runs, against the mean of the runs before and after: {rate:.2f}× the "
                         f"messages/s and {cpu:.2f}× the worker's CPU per message. The two runs without compaction "
                         f"differ by {spread:.2f}× in messages/s between themselves: on this shared 2-vCPU machine the "
                         "CPU per message is the figure to trust; the throughput also loses the core that compaction "
                         "takes (the worker and the compaction each use about one).")
        lines.append("")
    return "\n".join(lines)


def write_docs(text: str) -> None:
    """The figures into docs/lake.md, between its markers."""
    if DOCS.exists():
        doc = DOCS.read_text()
        if MARK_START in doc and MARK_END in doc:
            head, rest = doc.split(MARK_START, 1)
            _, tail = rest.split(MARK_END, 1)
            DOCS.write_text(f"{head}{MARK_START}\n{text}\n{MARK_END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.lake", description=__doc__.split("\n\n")[0])
    parser.add_argument("--transactions", type=int, default=200_000)
    parser.add_argument("--wide-days", type=int, default=40)
    parser.add_argument("--late-fraction", type=float, default=0.05)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--skip-landing", action="store_true", help="no back-to-back landing comparison")
    parser.add_argument("--skip-wide", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep topics, databases and lakes")
    args = parser.parse_args(argv)
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    results: dict[str, Any] = {"started_at": started, "transactions": args.transactions, "machine": machine_info(),
                               "git": git_state(), "loads": []}
    results["loads"].append(asyncio.run(run_load("benchmark", args.transactions, 3, args.late_fraction, args.partitions,
                                                 not args.skip_landing, args.keep)))
    if not args.skip_wide:
        results["loads"].append(asyncio.run(run_load("wide", args.transactions, args.wide_days, args.late_fraction,
                                                     args.partitions, False, args.keep)))
    text = markdown(results)
    write_latest("lake", results, "# Lake benchmark (`make bench-lake`)\n\n" + text)
    write_docs(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
