"""txlake's own Prometheus metrics (Faust's sensors add theirs on the same /metrics).

Names follow Prometheus conventions: ``txlake_`` prefix, base units, ``_total``
for counters.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "BATCH_RECORDS",
    "CONSUMER_LAG",
    "DEAD_LETTERS",
    "DELTA_COMMITS",
    "DELTA_COMMIT_BATCHES",
    "DELTA_COMMIT_CONFLICTS",
    "DEAD_LETTER_TOPIC_RECORDS",
    "DERIVED_RECORDS",
    "EXPORTS",
    "EXPORT_DURATION",
    "EXPORT_ROWS",
    "LAKE_COMPACTED_ROWS",
    "LAKE_COMPACTIONS",
    "LAKE_COMPACTION_SECONDS",
    "LAKE_VACUUMED_FILES",
    "LEDGER_POSITION",
    "PARTITION_HELD",
    "PARTITION_HOLDS",
    "PRODUCER_BUFFER",
    "RECORDS_LANDED",
    "SINK_FLUSH_SECONDS",
    "SINK_RETRIES",
    "TABLE_DELTA_GAPS",
    "TABLE_FLUSHES",
    "TABLE_FLUSH_KEYS",
    "TABLE_FLUSH_SECONDS",
    "TABLE_STATE_KEYS",
    "TABLE_UPDATES",
    "SNAPSHOT_DURATION",
    "SNAPSHOT_LATEST_VERSION",
    "SNAPSHOT_VERSIONS",
]

RECORDS_LANDED = Counter(
    "txlake_records_landed_total", "Records newly landed, by feed and sink.", ["feed", "sink"]
)
DEAD_LETTERS = Counter(
    "txlake_dead_letters_total", "Records sent to the dead-letter topic, by feed and reason.", ["feed", "reason"]
)
SINK_RETRIES = Counter(
    "txlake_sink_retries_total", "Failed sink writes that were retried, by feed and sink.", ["feed", "sink"]
)
BATCH_RECORDS = Histogram(
    "txlake_batch_records",
    "Records per landed partition batch, by feed.",
    ["feed"],
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
)
SINK_FLUSH_SECONDS = Histogram(
    "txlake_sink_flush_seconds", "Time to land one partition batch, by sink.", ["feed", "sink"]
)
LEDGER_POSITION = Gauge(
    "txlake_ledger_landed_through_offset",
    "Highest offset landed, by feed, sink and partition.",
    ["feed", "sink", "partition"],
)
CONSUMER_LAG = Gauge(
    "txlake_consumer_lag_records",
    "End offset minus committed offset, for the partitions assigned to this worker.",
    ["topic", "partition"],
)
DEAD_LETTER_TOPIC_RECORDS = Counter(
    "txlake_dead_letter_topic_records_total",
    "Records read from the dead-letter topic by this worker's share of it, by source topic and reason.",
    ["source_topic", "reason"],
)
PARTITION_HELD = Gauge(
    "txlake_partition_held",
    "1 while a partition's batch cannot land and is held (retried, never skipped), by feed and partition; alert on it.",
    ["feed", "partition"],
)
PARTITION_HOLDS = Counter(
    "txlake_partition_holds_total",
    "Times a partition started to be held, by feed and reason (own_record_invalid, value_not_storable).",
    ["feed", "reason"],
)
DERIVED_RECORDS = Counter(
    "txlake_derived_records_total",
    "Messages this worker wrote to the derived streams (committed transactions only), by derivation.",
    ["derivation"],
)
TABLE_UPDATES = Counter(
    "txlake_table_updates_total",
    "Keys whose aggregate changed in the tables txlake derives, by table.",
    ["table"],
)
PRODUCER_BUFFER = Gauge(
    "txlake_producer_buffer_messages",
    "Messages waiting in Faust's producer buffer (table updates and state changelogs), sampled with the lag poll. "
    "Faust's own 'producer buffer full' log line is lowered to DEBUG: this is where a backlog shows.",
)
TABLE_DELTA_GAPS = Counter(
    "txlake_table_delta_gaps_total",
    "Ranges of delta messages the table agent's consumer skipped or did not return, read back directly.",
)
TABLE_FLUSH_SECONDS = Histogram(
    "txlake_table_flush_seconds",
    "Time to flush one window of the table derivation: records produced and acknowledged, then the progress.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
TABLE_FLUSHES = Counter(
    "txlake_table_flushes_total",
    "Flushes of the table derivation's window, by what ended the window "
    "(caught_up, interval, cache_full, revoked, stopping).",
    ["reason"],
)
TABLE_FLUSH_KEYS = Histogram(
    "txlake_table_flush_keys",
    "Keys written per flush of the table derivation (each once, however often the window touched it).",
    buckets=(1, 10, 100, 1000, 5000, 10_000, 25_000, 50_000, 100_000),
)
TABLE_STATE_KEYS = Gauge(
    "txlake_table_state_keys",
    "Keys held in memory by the table derivation (every state table), by deltas partition.",
    ["partition"],
)
SNAPSHOT_VERSIONS = Counter(
    "txlake_snapshot_versions_total",
    "Snapshot versions that reached a final state in this process, by table and status (complete, failed, expired).",
    ["table", "status"],
)
SNAPSHOT_LATEST_VERSION = Gauge(
    "txlake_snapshot_latest_version", "Newest complete snapshot version this process has seen, by table.", ["table"]
)
SNAPSHOT_DURATION = Histogram(
    "txlake_snapshot_duration_seconds",
    "Time to take one snapshot version (stage, commit, publish), by table.",
    ["table"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800),
)
EXPORTS = Counter(
    "txlake_exports_total", "Batch re-exports from ksqlDB started by this worker, by kind and final state.", ["kind", "state"]
)
EXPORT_ROWS = Counter("txlake_export_rows_total", "Rows exported from ksqlDB by this worker's exports, by kind.", ["kind"])
EXPORT_DURATION = Histogram(
    "txlake_export_duration_seconds",
    "Time from start to final state of one export, by kind.",
    ["kind"],
    buckets=(1, 5, 10, 30, 60, 120, 300, 900, 1800, 3600),
)
DELTA_COMMITS = Counter(
    "txlake_delta_commits_total", "Delta table commits of landed batches (lake.format = delta), by dataset.", ["dataset"]
)
DELTA_COMMIT_BATCHES = Histogram(
    "txlake_delta_commit_batches",
    "Partition batches carried by one Delta commit (group commit), by dataset.",
    ["dataset"],
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64),
)
DELTA_COMMIT_CONFLICTS = Counter(
    "txlake_delta_commit_conflicts_total",
    "Delta commits refused because another writer committed the same application id (or the metadata) first; "
    "the batches are filtered against the newer log and committed again.",
    ["dataset"],
)
LAKE_COMPACTIONS = Counter(
    "txlake_lake_compactions_total",
    "Day partitions the worker's maintenance schedule handled, by dataset and status (compacted, skipped, busy, failed).",
    ["dataset", "status"],
)
LAKE_COMPACTED_ROWS = Counter("txlake_lake_compacted_rows_total", "Rows rewritten by compaction, by dataset.", ["dataset"])
LAKE_COMPACTION_SECONDS = Histogram(
    "txlake_lake_compaction_seconds",
    "Wall time of one day's compaction.",
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
LAKE_VACUUMED_FILES = Counter(
    "txlake_lake_vacuumed_files_total", "Leftover files removed by vacuum, by dataset.", ["dataset"]
)
