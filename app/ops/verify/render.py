"""``txlake verify``'s human-readable report: one line per partition, problems as offset ranges."""

from __future__ import annotations

from app.ops.verify.deployment import VerifyReport
from app.ops.verify.reconcile import PartitionFindings
from app.ops.verify.tables import ChangelogFindings, LiveStateFindings

__all__ = ["render_text"]

_SHOWN_RANGES = 8


def _ranges(ranges: list[tuple[int, int]]) -> str:
    shown = ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in ranges[:_SHOWN_RANGES])
    more = len(ranges) - _SHOWN_RANGES
    total = sum(b - a + 1 for a, b in ranges)
    return f"{total} offsets: {shown}" + (f", ... ({more} more ranges)" if more > 0 else "")


def _problems(p: PartitionFindings) -> list[str]:
    lines = []
    for label, ranges in (
        ("MISSING (neither in the lake nor dead-lettered)", p.missing),
        ("DUPLICATED in the lake", p.duplicated),
        ("in the lake AND dead-lettered", p.both),
        ("visible above the lake ledger", p.beyond_ledger),
    ):
        if ranges:
            lines.append(f"    {label}: {_ranges(ranges)}")
    if p.committed_ahead:
        lines.append(f"    consumer group committed {p.positions.committed} beyond what the sinks hold")
    for table, keys in p.missing_dimension_keys.items():
        if keys:
            lines.append(f"    {table}: keys landed in the lake without a row: {', '.join(map(repr, keys))}")
    return lines


def _changelog_lines(p: ChangelogFindings) -> list[str]:
    pos = p.positions
    committed = "-" if pos.committed is None else pos.committed
    lines = [
        f"  [{p.partition}] {'ok' if p.ok else 'PROBLEM':<7} kafka {pos.log_start}..{pos.last_offset}  committed {committed}  "
        f"warehouse {pos.ledger}  read {p.checked:,} changes, {p.in_dead_letters:,} dead-lettered"
    ]
    if p.ledger_beyond_kafka:
        lines.append(f"    fact ledger {pos.ledger} is beyond Kafka's last offset {pos.last_offset}")
    if p.committed_ahead:
        lines.append(f"    consumer group committed {pos.committed} beyond the fact ledger")
    if p.missing:
        lines.append(f"    NOT LANDED (settled check): {_ranges(p.missing)}")
    if p.not_dead_lettered:
        lines.append(f"    rejected by the sink but NOT in the dead-letter topic: {_ranges(p.not_dead_lettered)}")
    return lines


def _live_state_lines(live: LiveStateFindings) -> list[str]:
    lines = [
        f"  live rows of {live.fact_table}: {'ok' if live.ok else 'PROBLEM'}  "
        f"{live.live_rows:,} rows, {live.expected_keys:,} keys in the changelog"
    ]
    for label, count, keys in (
        ("MISSING from MySQL", live.missing_count, live.missing),
        ("in MySQL but NOT in the changelog", live.extra_count, live.extra),
    ):
        if count:
            lines.append(f"    {label}: {count:,} keys: {', '.join('/'.join(k) for k in keys)}{' ...' if count > len(keys) else ''}")
    if live.differing_count:
        shown = "; ".join(f"{'/'.join(d['key'])} {d['column']} {d['stored']} (expected {d['expected']})" for d in live.differing)
        lines.append(f"    DIFFERING measures: {live.differing_count:,}: {shown}")
    if live.stale_count:
        shown = "; ".join(f"{'/'.join(s['key'])} (last change at offset {s['offset']} {s['why']})" for s in live.stale)
        lines.append(f"    STALE facts (older than their changelog key's last value): {live.stale_count:,}: {shown}"
                     + (" ..." if live.stale_count > len(live.stale) else ""))
    for table, keys in live.missing_dimension_keys.items():
        if keys:
            lines.append(f"    {table}: facts without a dimension row: {', '.join(map(repr, keys))}")
    return lines


def render_text(report: VerifyReport) -> str:
    """The report as text: per dataset and partition, positions, counts and what is wrong."""
    out = []
    for feed in report.feeds:
        out.append(f"{feed.dataset}  (feed {feed.feed}, topic {feed.topic})")
        if feed.not_checked:
            out.append(f"  not checked: {feed.not_checked}")
            continue
        for p in feed.partitions:
            if isinstance(p, ChangelogFindings):
                out.extend(_changelog_lines(p))
                continue
            pos = p.positions
            wh = "-" if pos.warehouse_through is None else pos.warehouse_through
            committed = "-" if pos.committed is None else pos.committed
            status = "ok" if p.ok else "PROBLEM"
            out.append(
                f"  [{p.partition}] {status:<7} kafka {pos.log_start}..{pos.last_offset}  committed {committed}  "
                f"lake {pos.lake_through}  warehouse {wh}  checked {p.checked:,}: "
                f"{p.in_lake:,} in the lake, {p.in_dead_letters:,} dead-lettered"
                + (f", {p.non_records:,} transaction markers/aborted skipped" if p.non_records else "")
                + (f" ({p.dead_letter_repeats} repeated dead letters, tolerated: at least once)" if p.dead_letter_repeats else "")
            )
            out.extend(_problems(p))
        if feed.live_state is not None:
            out.extend(_live_state_lines(feed.live_state))
    if report.foreign_dead_letters:
        out.append(f"dead-letter topic: {report.foreign_dead_letters} records from topics that are not feeds (ignored)")
    verdict = "OK: nothing missing, nothing duplicated" if report.ok else "FAILED: see PROBLEM lines above"
    out.append(f"{verdict} ({report.records_checked:,} offsets checked in {report.elapsed_s:.2f}s)")
    return "\n".join(out)
