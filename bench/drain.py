"""The stream benchmark's drain: one ``txlake worker`` empties the filled topics, observed from outside.

Reported (see docs/benchmarks.md): messages/s over the whole drain (start-up included), after the
first landed batch, and in steady state (10 % → 90 % in the lake); the worker's peak RSS (VmHWM)
and CPU, also as CPU-µs per message; the CPU of the broker, MariaDB and the bench itself over the
drain, and how busy the whole machine was (other jobs included).
"""

from __future__ import annotations

import asyncio
import resource
import signal
import subprocess
import time
from typing import Any

from bench.infra import Run, WorkerProcess, broker_pid, log, mariadb_pid
from bench.probes import (
    RssSampler,
    committed_offsets,
    cpu_us_per_unit,
    lake_landed_messages,
    machine_cpu,
    proc_cpu_s,
    proc_status,
    scrape_metrics,
    start_profiler,
    steady_window,
    summarise_profile,
)

__all__ = ["drain"]


async def drain(
    run: Run, settings: Any, feeds: tuple, fill_result: dict[str, Any], timeout_s: float, profile: bool
) -> dict[str, Any]:
    """Time ``txlake worker`` draining the filled topics until every sink holds and the group committed all.

    The clock runs from the worker's start until every partition of every feed has landed in every
    sink *and* the consumer group's committed offsets equal the end offsets; the first landed
    batch (a lake ledger appears) marks the end of start-up.
    """
    from aiokafka.admin import AIOKafkaAdminClient

    from app.ops.progress import feed_progress

    rows = await feed_progress(settings, feeds)
    ends = {(row.topic, row.partition): row.last_offset + 1 for row in rows}
    total = sum(ends.values())
    if total != fill_result["messages_total"]:
        log(f"warning: Kafka holds {total:,} messages, the producer reported {fill_result['messages_total']:,}")

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    worker_log = run.scratch / "worker.log"
    services = {"broker": broker_pid(), "mariadb": mariadb_pid()}
    cpu_before = {name: proc_cpu_s(pid) for name, pid in services.items()}
    machine_before = machine_cpu()
    observer_before = resource.getrusage(resource.RUSAGE_SELF)

    t0 = time.monotonic()
    worker = WorkerProcess(run.env, worker_log, cwd=run.scratch).start()
    sampler = RssSampler(worker.pid)
    sampler.start()
    profiler: subprocess.Popen | None = None
    profile_raw = run.scratch / "profile.raw"
    t_first = t_landed = t_committed = None
    timeline: list[tuple[float, int]] = []
    polls = 0
    poll_cpu_s = 0.0
    poll_errors: list[str] = []
    next_poll = 0.0
    next_report = 5.0
    worker_cpu_s = peak_kb = None
    metrics_summary: dict[str, Any] = {}
    try:
        while True:
            now = time.monotonic() - t0
            if worker.exit_code() is not None:
                raise RuntimeError(f"the worker exited with code {worker.exit_code()} during the drain:\n{worker.log_tail()}")
            if now > timeout_s:
                raise TimeoutError(f"not drained after {timeout_s:.0f}s (see {worker_log})")
            if t_first is None and lake_landed_messages(settings, feeds, ends) > 0:
                t_first = now
                log(f"  first batch landed after {t_first:.1f}s (worker start-up)")
                if profile:
                    profiler = start_profiler(worker.pid, profile_raw)
            if now >= next_poll:
                next_poll = now + 0.5
                polls += 1
                cpu0 = time.process_time()
                if t_landed is None:
                    try:
                        rows = await feed_progress(settings, feeds)
                    except Exception as exc:  # noqa: BLE001 - e.g. MariaDB restarted by someone else
                        poll_errors.append(f"{now:.1f}s {type(exc).__name__}: {exc}")
                        log(f"  progress poll failed ({type(exc).__name__}: {exc}); the clock keeps running")
                        await asyncio.sleep(0.5)
                        continue
                    landed_lake = sum(min(r.lake + 1, r.last_offset + 1) for r in rows)
                    timeline.append((round(now, 2), landed_lake))
                    if rows and all(row.landed for row in rows):
                        t_landed = time.monotonic() - t0
                        log(f"  everything landed in both sinks after {t_landed:.1f}s")
                committed = await committed_offsets(admin, run.group_id)
                if all(committed.get(tp, -1) >= end for tp, end in ends.items()):
                    if t_committed is None:
                        t_committed = time.monotonic() - t0
                        log(f"  consumer group committed the end offsets after {t_committed:.1f}s")
                poll_cpu_s += time.process_time() - cpu0
                if t_landed is not None and t_committed is not None:
                    break
                if now >= next_report and timeline:
                    next_report = now + 5.0
                    landed = timeline[-1][1]
                    log(f"  {now:6.1f}s  landed {landed:>10,}/{total:,} ({100 * landed / total:5.1f} %)  "
                        f"RSS {(sampler.samples[-1][1] / 1024) if sampler.samples else 0:.0f} MB")
            await asyncio.sleep(0.1 if t_first is None else 0.05)
        t_done = max(t_landed, t_committed)
        metrics_summary = await asyncio.to_thread(scrape_metrics, run.web_port, run.scratch / "worker-metrics.txt")
        worker_cpu_s = proc_cpu_s(worker.pid)
        peak_kb = proc_status(worker.pid, "VmHWM")
    finally:
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            try:
                profiler.wait(timeout=60)
            except subprocess.TimeoutExpired:
                profiler.kill()
        sampler.stop()
        machine_after = machine_cpu()
        observer_after = resource.getrusage(resource.RUSAGE_SELF)
        cpu_after = {name: proc_cpu_s(pid) for name, pid in services.items()}
        stop_started = time.monotonic()
        exit_code = worker.stop()
        stop_s = time.monotonic() - stop_started
        await admin.close()

    try:
        final_rows = await feed_progress(settings, feeds)
        all_landed_after_stop: bool | None = all(row.landed for row in final_rows)
    except Exception as exc:  # noqa: BLE001 - informative only
        log(f"final progress check failed: {exc}")
        all_landed_after_stop = None
    messages = total
    transactions = fill_result["transactions"]
    steady_s = steady_window(timeline, total)
    window_s = t_done - t_first
    machine_busy = machine_after[0] - machine_before[0]
    machine_total = machine_after[1] - machine_before[1]
    observer_cpu = (observer_after.ru_utime + observer_after.ru_stime) - (observer_before.ru_utime + observer_before.ru_stime)

    def delta(name: str) -> float | None:
        before, after = cpu_before[name], cpu_after[name]
        return None if before is None or after is None else after - before

    rss_values = [kb for _, kb in sampler.samples]
    result = {
        "messages": messages,
        "transactions": transactions,
        "startup_s": t_first,
        "landed_s": t_landed,
        "committed_s": t_committed,
        "drain_s": t_done,
        "drain_after_first_batch_s": window_s,
        "msg_per_s": messages / t_done,
        "msg_per_s_after_first_batch": messages / window_s if window_s > 0 else None,
        "tx_per_s": transactions / t_done,
        "tx_per_s_after_first_batch": transactions / window_s if window_s > 0 else None,
        "steady_msg_per_s_10_90": (0.8 * total / steady_s) if steady_s else None,
        "peak_rss_mb": peak_kb / 1024 if peak_kb else None,
        "max_sampled_rss_mb": max(rss_values) / 1024 if rss_values else None,
        "median_sampled_rss_mb": sorted(rss_values)[len(rss_values) // 2] / 1024 if rss_values else None,
        "rss_samples": len(rss_values),
        "cpu_s": {
            "worker": worker_cpu_s,
            "broker": delta("broker"),
            "mariadb": delta("mariadb"),
            "bench_observer": observer_cpu,
            "bench_progress_polls": poll_cpu_s,
            "machine_busy": machine_busy,
            "machine_capacity": machine_total,
        },
        "worker_cpu_cores_avg": worker_cpu_s / t_done if worker_cpu_s else None,
        "worker_cpu_us_per_message": cpu_us_per_unit(worker_cpu_s, messages),
        "machine_busy_fraction": machine_busy / machine_total if machine_total else None,
        "progress_polls": polls,
        "progress_poll_errors": poll_errors,
        "worker_exit_code": exit_code,
        "worker_stop_s": stop_s,
        "all_landed_after_stop": all_landed_after_stop,
        "timeline": timeline,
        "rss_timeline_mb": [(round(t, 1), round(kb / 1024, 1)) for t, kb in sampler.samples[:: max(1, len(sampler.samples) // 300)]],
        "worker_log": str(worker_log),
        "worker_metrics": metrics_summary,
        "dead_letters_logged": worker_log.read_text(errors="replace").count("dead-lettering"),
    }
    if profile and profile_raw.exists():
        result["profile"] = summarise_profile(profile_raw)
        result["profile"]["raw"] = str(profile_raw)
    return result
