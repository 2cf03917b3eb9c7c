"""Benchmark results: where they are written, and how the stream benchmark reads them out.

The convention every benchmark follows (``make bench``, ``make bench-tables``, ``make bench-export``
and any new one): a run writes ``bench/results/<name>-LATEST.json`` (everything measured: machine,
versions, settings, timelines) and ``bench/results/<name>-LATEST.md`` (the page a reader wants),
replacing the previous run's, then rewrites ``bench/results/LATEST.md``, which gathers every
benchmark's latest page. Git keeps only the latest results; older ones live in its history. No
benchmark writes anywhere else (never the README).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.infra import REPO

__all__ = [
    "RESULTS_DIR",
    "TARGET_MSG_PER_S",
    "TARGET_NAIVE_RATIO",
    "TARGET_PEAK_RSS_MB",
    "evaluate_streams",
    "fmt",
    "met",
    "print_streams",
    "streams_markdown",
    "times",
    "write_index",
    "write_latest",
]

RESULTS_DIR = REPO / "bench" / "results"
INDEX = "LATEST.md"
# The order of LATEST.md; benchmarks not listed here follow, by name.
KNOWN = ("streams", "tables", "derived", "lake", "delta", "export")

TARGET_MSG_PER_S = 50_000
TARGET_NAIVE_RATIO = 10.0
TARGET_PEAK_RSS_MB = 400.0


# ------------------------------------------------------------------------------- results files


def write_latest(name: str, results: dict[str, Any], page: str, results_dir: Path = RESULTS_DIR) -> tuple[Path, Path]:
    """Write ``<name>-LATEST.json`` and ``<name>-LATEST.md`` (replacing the last run's), then the index."""
    results_dir.mkdir(parents=True, exist_ok=True)
    raw = results_dir / f"{name}-LATEST.json"
    raw.write_text(json.dumps(results, indent=2, default=str) + "\n", "utf-8")
    summary = results_dir / f"{name}-LATEST.md"
    summary.write_text(page.rstrip("\n") + "\n", "utf-8")
    write_index(results_dir)
    return raw, summary


def write_index(results_dir: Path = RESULTS_DIR) -> Path:
    """``LATEST.md``: every ``<name>-LATEST.md`` in the directory, one section each (headings one level down)."""
    pages = {path.name.removesuffix("-LATEST.md"): path for path in results_dir.glob("*-LATEST.md")}
    order = [name for name in KNOWN if name in pages] + sorted(set(pages) - set(KNOWN))
    parts = [
        "# Latest benchmark results",
        "",
        "<!-- Written by the benchmarks (bench/report.py): one section per benchmark, from <name>-LATEST.md;",
        "     the raw figures are in <name>-LATEST.json. How to read them: docs/benchmarks.md. -->",
    ]
    for name in order:
        text = pages[name].read_text("utf-8").rstrip("\n")
        parts += ["", "\n".join("#" + line if line.startswith("#") else line for line in text.splitlines())]
    index = results_dir / INDEX
    index.write_text("\n".join(parts) + "\n", "utf-8")
    return index


# ------------------------------------------------------------------------------------ figures


def fmt(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "NOT met")


def times(ratio: float | None) -> str:
    """A ratio as ``10.1×`` (``n/a`` when a reference was skipped)."""
    return "n/a" if ratio is None else f"{ratio:,.1f}×"


def _percent(fraction: float | None) -> float | None:
    return None if fraction is None else 100 * fraction


# ---------------------------------------------------------------------------- stream benchmark


def evaluate_streams(results: dict[str, Any]) -> dict[str, Any]:
    """Ratios against the references of the same run, and the stream targets met or not."""
    d = results["drain"]
    naive = results.get("naive")
    perf = results.get("consumer_performance") or {}
    txlake = d["msg_per_s"]
    naive_rate = naive["msg_per_s"] if naive else None
    perf_tx = perf.get("transactions", {}).get("nMsg.sec")
    perf_all = perf.get("all_topics_msg_per_s")
    ratios = {
        "txlake_over_naive": txlake / naive_rate if naive_rate else None,
        "txlake_over_naive_after_first_batch": (
            d["msg_per_s_after_first_batch"] / naive["msg_per_s_from_first_batch"]
            if naive and naive["msg_per_s_from_first_batch"] and d["msg_per_s_after_first_batch"] else None
        ),
        "txlake_over_consumer_performance_transactions": txlake / perf_tx if perf_tx else None,
        "txlake_over_consumer_performance_all_topics": txlake / perf_all if perf_all else None,
    }
    targets = {
        "msg_per_s_ge_50000": {"target": TARGET_MSG_PER_S, "value": txlake, "met": txlake >= TARGET_MSG_PER_S},
        "naive_ratio_ge_10": {
            "target": TARGET_NAIVE_RATIO,
            "value": ratios["txlake_over_naive"],
            "met": None if ratios["txlake_over_naive"] is None else ratios["txlake_over_naive"] >= TARGET_NAIVE_RATIO,
        },
        "peak_rss_le_400_mb": {
            "target": TARGET_PEAK_RSS_MB,
            "value": d["peak_rss_mb"],
            "met": None if d["peak_rss_mb"] is None else d["peak_rss_mb"] <= TARGET_PEAK_RSS_MB,
        },
    }
    return {"ratios": ratios, "targets": targets}


def streams_markdown(results: dict[str, Any]) -> str:
    """The stream benchmark's page: the run, the measurements, the ratios, the targets."""
    m, v, f, d = results["machine"], results["versions"], results["fill"], results["drain"]
    naive, perf = results.get("naive"), results.get("consumer_performance") or {}
    ratios, targets = results["evaluation"]["ratios"], results["evaluation"]["targets"]
    per_topic = ", ".join(f"{topic.removesuffix(results['run']['topic_suffix'])} {n:,}" for topic, n in f["messages_per_topic"].items())
    lines = [
        "# Stream path (`make bench`)",
        "",
        f"Measured {results['date_utc']} with `python -m bench.run --transactions {f['transactions']:,}` "
        f"({f['partitions']} partitions per topic, flush size {results['settings']['flush_size']}, "
        f"rotate interval {results['settings']['rotate_interval_ms']} ms).",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB RAM; Python {v['python']}, "
        f"Kafka {v['kafka']} (single broker, same machine), MariaDB {v['mariadb']}, faust-streaming {v['packages']['faust-streaming']}.",
        "",
        f"Code: commit `{results['git']['commit']}`"
        + (f" with local changes to {', '.join(results['git']['worker_code_changed'])}" if results['git']['worker_code_changed'] else "")
        + ".",
        "",
        f"Load: {f['transactions']:,} transactions = {f['messages_total']:,} messages over 4 topics ({per_topic}); "
        f"produced in {f['produce_s']:.1f} s.",
        "",
        "| measurement | messages/s | notes |",
        "|---|---:|---|",
        f"| txlake worker, whole drain (start-up included) | {fmt(d['msg_per_s'])} | {d['drain_s']:.1f} s; {fmt(d['tx_per_s'])} transactions/s |",
        f"| txlake worker, after the first landed batch | {fmt(d['msg_per_s_after_first_batch'])} | start-up {d['startup_s']:.1f} s; {fmt(d['tx_per_s_after_first_batch'])} transactions/s |",
        f"| txlake worker, steady state (10 %→90 % landed) | {fmt(d['steady_msg_per_s_10_90'])} | from the lake ledgers, 0.5 s polls |",
    ]
    if naive:
        lines.append(
            f"| naive consumer (json.loads + pandas + row-by-row upsert), `transactions` only | {fmt(naive['msg_per_s'])} | "
            f"bounded sample: {naive['messages']:,} messages in {naive['elapsed_s']:.1f} s (stopped by {naive['stopped_by']}) |"
        )
    else:
        lines.append("| naive consumer | skipped | `--skip-naive` |")
    if "transactions" in perf:
        p = perf["transactions"]
        lines.append(
            f"| Kafka ConsumerPerformance, `transactions` | {fmt(p['nMsg.sec'])} | {p['MB.sec']:.1f} MB/s, {p['data.consumed.in.nMsg']:,.0f} messages, no processing |"
        )
    if perf.get("all_topics_msg_per_s"):
        lines.append(
            f"| Kafka ConsumerPerformance, all 4 topics (one run per topic, times summed) | {fmt(perf['all_topics_msg_per_s'])} | "
            f"{perf['all_topics_mb']:.0f} MB in {perf['all_topics_s']:.1f} s |"
        )
    lines += [
        "",
        f"Worker peak RSS (VmHWM) {fmt(d['peak_rss_mb'])} MB; worker CPU {fmt(d['cpu_s']['worker'], 1)} s "
        f"= {fmt(d['worker_cpu_cores_avg'], 2)} cores on average over the drain "
        f"= **{fmt(d.get('worker_cpu_us_per_message'), 1)} CPU-µs per message**.",
        "",
        f"The machine was {fmt(_percent(d.get('machine_busy_fraction')))} % busy over the drain "
        f"(all its CPUs, other jobs included); compare figures only with runs taken back to back.",
        "",
        "| ratio | value |",
        "|---|---:|",
        f"| txlake ÷ naive | {times(ratios['txlake_over_naive'])} |",
        f"| txlake ÷ ConsumerPerformance (`transactions`) | {fmt(ratios['txlake_over_consumer_performance_transactions'], 3)} |",
        f"| txlake ÷ ConsumerPerformance (all 4 topics) | {fmt(ratios['txlake_over_consumer_performance_all_topics'], 3)} |",
        "",
        "| target | measured | status |",
        "|---|---:|---|",
        f"| ≥ {TARGET_MSG_PER_S:,} messages/s (whole drain) | {fmt(targets['msg_per_s_ge_50000']['value'])} | {met(targets['msg_per_s_ge_50000']['met'])} |",
        f"| ≥ {TARGET_NAIVE_RATIO:.0f}× the naive consumer | {times(targets['naive_ratio_ge_10']['value'])} | {met(targets['naive_ratio_ge_10']['met'])} |",
        f"| peak RSS ≤ {TARGET_PEAK_RSS_MB:.0f} MB | {fmt(targets['peak_rss_le_400_mb']['value'])} MB | {met(targets['peak_rss_le_400_mb']['met'])} |",
        "",
        "Raw figures: `streams-LATEST.json` beside this page. What is measured and how: docs/benchmarks.md.",
    ]
    if results.get("profiled"):
        lines.insert(2, "**This run was profiled with py-spy: its timings are perturbed.**\n")
    return "\n".join(lines)


def print_streams(results: dict[str, Any]) -> None:
    print()
    print(streams_markdown(results))
    profile = results.get("drain", {}).get("profile")
    if profile:
        print(f"\npy-spy profile of the worker ({profile['samples']:,} samples, raw: {profile['raw']})")
        for kind in ("self", "inclusive", "self_by_package"):
            print(f"  top {kind}:")
            for row in profile[kind][:15]:
                print(f"    {row['percent']:5.1f} %  {row['function']}")
    print()
