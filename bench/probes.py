"""What the benchmarks observe: /proc CPU and memory, the worker's /metrics, landing progress, profiles.

Probes read and never change anything. CPU comes from ``/proc/<pid>/stat`` (user + system, all
threads) and ``/proc/stat`` for the whole machine, so a figure can be given as CPU-µs per unit of
work and the machine's other load can be stated beside it; memory from ``/proc/<pid>/status``
(``VmRSS`` sampled, ``VmHWM`` the kernel's peak).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.infra import REPO, log

__all__ = [
    "RssSampler",
    "committed_offsets",
    "cpu_us_per_unit",
    "lake_landed_messages",
    "lake_stats",
    "machine_cpu",
    "proc_cpu_s",
    "proc_status",
    "scrape_metrics",
    "start_profiler",
    "steady_window",
    "summarise_profile",
]

CLK_TCK = os.sysconf("SC_CLK_TCK")

# ---------------------------------------------------------------------------------- /proc


def proc_status(pid: int, field_name: str) -> int | None:
    """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM), in kB."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def proc_cpu_s(pid: int | None) -> float | None:
    """user + system CPU seconds of a process (all its threads)."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return (total - idle) / CLK_TCK, total / CLK_TCK


def cpu_us_per_unit(cpu_s: float | None, units: int | float | None) -> float | None:
    """CPU-µs per unit of work (message, transaction, row): what moves least when the machine is shared."""
    return cpu_s * 1e6 / units if cpu_s and units else None


class RssSampler(threading.Thread):
    """Samples VmRSS of a process every ``interval_s`` (kB) until stopped."""

    def __init__(self, pid: int, interval_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval_s = pid, interval_s
        self.samples: list[tuple[float, int]] = []
        self._stop_event = threading.Event()
        self._t0 = time.monotonic()

    def run(self) -> None:
        while not self._stop_event.is_set():
            rss = proc_status(self.pid, "VmRSS")
            if rss is not None:
                self.samples.append((time.monotonic() - self._t0, rss))
            self._stop_event.wait(self.interval_s)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=2)


# ------------------------------------------------------------------------------- progress


async def committed_offsets(admin: Any, group: str) -> dict[tuple[str, int], int]:
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    except Exception:  # noqa: BLE001 - the group does not exist yet / coordinator loading
        return {}
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}


def lake_landed_messages(settings: Any, feeds: tuple, ends: dict[tuple[str, int], int]) -> int:
    """Messages the lake holds (from its ledger files; cheap, safe while the worker runs)."""
    from app.lake.ledger import read_landed_through

    by_topic = {feed.topic: feed for feed in feeds}
    landed = 0
    for (topic, partition), end in ends.items():
        held = read_landed_through(settings.lake.root, by_topic[topic].dataset, topic, partition)
        landed += min(held + 1, end)
    return landed


def steady_window(timeline: list[tuple[float, int]], total: int) -> float | None:
    """Seconds between 10 % and 90 % of the messages landed in the lake (linear interpolation)."""

    def crossing(level: float) -> float | None:
        previous = None
        for t, landed in timeline:
            if landed >= level:
                if previous is None or landed == previous[1]:
                    return t
                pt, pl = previous
                return pt + (t - pt) * (level - pl) / (landed - pl)
            previous = (t, landed)
        return None

    low, high = crossing(0.1 * total), crossing(0.9 * total)
    return (high - low) if low is not None and high is not None and high > low else None


def lake_stats(root: Path) -> dict[str, Any]:
    datasets: dict[str, dict[str, int]] = {}
    for path in root.glob("streams/*/**/*.parquet"):
        name = path.relative_to(root).parts[1]
        entry = datasets.setdefault(name, {"files": 0, "bytes": 0})
        entry["files"] += 1
        entry["bytes"] += path.stat().st_size
    return datasets


# ------------------------------------------------------------------------ /metrics and py-spy


def scrape_metrics(port: int, save_to: Path) -> dict[str, Any]:
    """The worker's own batch and flush metrics from its /metrics endpoint (Prometheus text)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError as exc:
        return {"error": str(exc)}
    save_to.write_text(text)
    sums: dict[str, dict[str, float]] = {}
    pattern = re.compile(r'^(txlake_batch_records|txlake_sink_flush_seconds)_(sum|count)\{([^}]*)\} ([0-9.eE+-]+)$')
    for line in text.splitlines():
        match = pattern.match(line)
        if not match:
            continue
        metric, kind, labels, value = match.groups()
        label = ",".join(part.split("=", 1)[1].strip('"') for part in labels.split(","))
        sums.setdefault(f"{metric}[{label}]", {})[kind] = float(value)
    summary = {}
    for key, entry in sorted(sums.items()):
        count, total = entry.get("count", 0.0), entry.get("sum", 0.0)
        summary[key] = {"count": int(count), "sum": total, "mean": total / count if count else None}
    return summary


def start_profiler(pid: int, out: Path) -> subprocess.Popen | None:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        log("--profile: py-spy not found (pip install py-spy into .venv for a one-off profile); not profiling")
        return None
    log(f"  profiling the worker with py-spy -> {out}")
    return subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--rate", "100", "--format", "raw", "--threads", "--nonblocking",
         "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def summarise_profile(raw_path: Path, top: int = 30) -> dict[str, Any]:
    """Top functions (self and inclusive) and packages of a ``py-spy record --format raw`` file."""
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0

    def frame_name(frame: str) -> str:
        # "function (path/to/file.py:123)" -> "function (file-ish path)"
        match = re.match(r"^(.*) \((.*?)(?::\d+)?\)$", frame.strip())
        if not match:
            return frame.strip()
        function, path = match.groups()
        for marker in ("site-packages/", "lib/python3.11/", f"{REPO}/"):
            if marker in path:
                path = path.split(marker, 1)[1]
                break
        return f"{function} ({path})"

    def package_of(name: str) -> str:
        path = name[name.rfind("(") + 1 : -1]
        head = path.split("/", 1)[0]
        return head.removesuffix(".py") if "/" in path else path

    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if frames and frames[0].startswith(("thread (", "process ")):
            # --threads / --subprocesses prefixes
            thread_frames = [f for f in frames if f.startswith("thread (")]
            threads[thread_frames[0] if thread_frames else "main"] += count
            frames = [f for f in frames if not f.startswith(("thread (", "process "))]
        if not frames:
            continue
        names = [frame_name(f) for f in frames]
        total += count
        self_counts[names[-1]] += count
        packages[package_of(names[-1])] += count
        for name in set(names):
            inclusive[name] += count

    def table(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "samples": n, "percent": round(100 * n / total, 1)}
            for name, n in counter.most_common(top)
        ]

    return {
        "samples": total,
        "self": table(self_counts),
        "inclusive": table(inclusive),
        "self_by_package": table(packages),
        "threads": {name: n for name, n in threads.most_common()},
    }
