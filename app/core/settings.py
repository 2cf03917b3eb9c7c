"""txlake's settings: one frozen object, built once at start and passed down.

Sources, highest priority first:

1. keyword arguments (tests),
2. environment variables, prefix ``TXLAKE_``, nested sections split by ``__``
   (``TXLAKE_MYSQL__HOST``, ``TXLAKE_BATCHING__FLUSH_SIZE``),
3. a ``.env`` file in the working directory,
4. secret files, one value per file, named like the variable without the
   prefix (``mysql__password``, ``anonymization__key``) in the directory
   ``TXLAKE_SECRETS_DIR`` (default ``/run/secrets/txlake``) -- how Kubernetes
   mounts a Secret as a volume,
5. the defaults below, which work with the local services of ``scripts/infra``.

List settings (``TXLAKE_BLACKLIST__COUNTRIES``) take a JSON list or comma-separated values
(:mod:`app.core.environment`). Secrets are :class:`~pydantic.SecretStr`: printing or logging the
settings shows ``**********``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from app.core.environment import ListFriendlyDotEnvSource, ListFriendlyEnvSource
from models.derive import Blacklist

__all__ = [
    "AnonymizationSettings",
    "BatchingSettings",
    "CompactionSettings",
    "ErrorsSettings",
    "HealthSettings",
    "KafkaSettings",
    "KsqlDBSettings",
    "LakeSettings",
    "MySQLSettings",
    "Settings",
    "SnapshotSettings",
    "StreamsSettings",
    "TablesSettings",
    "WebSettings",
]

DEFAULT_SECRETS_DIR = "/run/secrets/txlake"
LOCAL_ANONYMIZATION_KEY = "txlake-local-demo-key"  # the local demo's key: never for real data


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Section):
    """Where the worker consumes from and how it identifies itself."""

    bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Comma-separated host:port list (Kafka's bootstrap.servers)."
    )
    group_id: str = Field(
        "txlake",
        description="Consumer group id, also the Faust app id. Workers with the same id share the partitions.",
    )
    group_instance_id: str | None = Field(
        None,
        min_length=1,
        max_length=249,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="group.instance.id (static group membership, KIP-345): a name unique to this worker that "
        "stays the same across its restarts -- the pod name (the Helm chart sets it). A worker restarted "
        "under the same id within session_timeout_ms takes its partitions back at once, without a rebalance "
        "and without waiting for the killed process's session to expire. Two running workers must NEVER "
        "share an id (each would fence the other out in turn). Unset: dynamic membership.",
    )
    commit_interval_ms: int = Field(
        2800, ge=100, description="How often the offsets of landed batches are committed to Kafka."
    )
    session_timeout_ms: int = Field(
        30_000,
        ge=6000,
        le=90_000,
        description="session.timeout.ms: how long the group waits for a silent worker (killed, or its event "
        "loop blocked) before handing its partitions to the others. Without group_instance_id a restarted "
        "worker waits this long for its killed predecessor too. At most 90 s (Faust's request timeout). "
        "docs/recovery.md weighs the costs.",
    )
    heartbeat_interval_ms: int = Field(
        3000, ge=100, description="heartbeat.interval.ms: how soon a worker learns of a rebalance; below a third "
        "of the session timeout."
    )

    @model_validator(mode="after")
    def _heartbeat_below_a_third_of_the_session(self) -> KafkaSettings:
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            raise ValueError(
                f"heartbeat_interval_ms ({self.heartbeat_interval_ms}) must be at most a third of "
                f"session_timeout_ms ({self.session_timeout_ms}): two missed heartbeats must not end the session"
            )
        return self
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="security.protocol of every Kafka client txlake creates (and Faust's)."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "SCRAM-SHA-512", description="sasl.mechanism for SASL_PLAINTEXT / SASL_SSL."
    )
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password (secret: env or secret file).")
    ssl_cafile: Path | None = Field(None, description="CA bundle that signed the brokers' certificates; unset: the system CAs.")
    ssl_certfile: Path | None = Field(None, description="Client certificate (PEM) for mutual TLS.")
    ssl_keyfile: Path | None = Field(None, description="Client private key (PEM) for mutual TLS.")
    ssl_key_password: SecretStr | None = Field(None, description="Password of ssl_keyfile, if encrypted (secret).")


class MySQLSettings(_Section):
    """The warehouse connection (MySQL 8 or MariaDB 10.6+)."""

    host: str = Field("127.0.0.1", description="Host name or address of the MySQL/MariaDB server.")
    port: int = Field(3307, ge=1, le=65535, description="Port of the server (3307: the local MariaDB of scripts/infra).")
    user: str = Field("txlake", description="Application user; it needs SELECT, INSERT, UPDATE, DELETE on the database only.")
    password: SecretStr = Field(
        SecretStr("txlake-local"), description="Password of the application user; the default is the local demo's."
    )
    database: str = Field("txlake", description="Database holding the star schema (sql/), created by an administrator.")
    pool_size: int = Field(4, ge=1, le=64, description="Connections kept open by the warehouse sink.")
    connect_timeout_s: float = Field(10.0, gt=0, description="Time to open a connection before the attempt counts as failed.")
    ssl_mode: Literal["disabled", "required", "verify_ca", "verify_identity"] = Field(
        "disabled",
        description="TLS to MySQL, MySQL's --ssl-mode names: required encrypts, verify_ca also checks the "
        "server certificate against ssl_ca, verify_identity also checks the host name.",
    )
    ssl_ca: Path | None = Field(None, description="CA that signed the MySQL server certificate; unset: the system CAs.")
    lock_wait_timeout_s: int = Field(
        20,
        ge=1,
        le=3600,
        description="Longest wait for a table or row lock (session lock_wait_timeout and innodb_lock_wait_timeout). "
        "A lock held longer by another session (LOCK TABLES, a long DDL or backup) fails the batch, which "
        "is retried with backoff, instead of hanging the partition silently for the server's default (a day).",
    )


class CompactionSettings(_Section):
    """Compaction of closed day partitions and removal of leftovers (docs/lake.md, ``txlake lake compact``).

    Names follow Kafka Connect's ``*.interval.ms`` style. A day partition is *closed* when no new
    file reached it for ``close_idle_ms``, or when its end (the next UTC midnight) is more than
    ``close_lateness_ms`` ago; a closed day with at least ``min_files`` files below the target size
    is rewritten into files of about ``target_file_bytes``, rows sorted by ``sort_columns``.
    """

    enabled: bool = Field(
        True, description="Run compaction and vacuum on a schedule inside the worker (the CLI works either way)."
    )
    check_interval_ms: int = Field(
        300_000, ge=1000, description="How often a worker looks for closed days to compact (and vacuums)."
    )
    close_idle_ms: int = Field(
        900_000, ge=0, description="A day is closed once no new file has landed in it for this long."
    )
    close_lateness_ms: int | None = Field(
        86_400_000,
        ge=0,
        description="A day is also closed once its end (next UTC midnight) is this far in the past, even if late "
        "events still trickle in (they land as new files; the next pass merges them). Null: idle rule only.",
    )
    target_file_bytes: int = Field(
        128 * 1024 * 1024, ge=1024, description="Size of the files a day is rewritten into (the last one is smaller)."
    )
    min_files: int = Field(
        2, ge=2, description="A closed day is rewritten only when it has at least this many files below the target size."
    )
    sort_columns: tuple[str, ...] = Field(
        ("event_timestamp",), min_length=1, description="Rows of a compacted day are sorted by these columns."
    )
    compression: str | None = Field(
        None, description="Parquet codec of compacted files (snappy, zstd, gzip, none); null: lake.compression."
    )
    memory_bytes: int = Field(
        512 * 1024 * 1024,
        ge=1024 * 1024,
        description="Arrow memory one rewrite may hold. A larger day is sorted in event-time ranges, one pass per range.",
    )
    lease_ms: int = Field(
        120_000, ge=1000, description="Lease on a dataset-day while it is compacted (renewed every third); one owner across workers."
    )
    vacuum_retention_ms: int = Field(
        3_600_000,
        ge=0,
        description="Vacuum removes leftovers of crashed writers (uncommitted staged files, abandoned compaction "
        "work) once this old.",
    )


class LakeSettings(_Section):
    """Where the Parquet lake lives, and in which table format."""

    format: Literal["hive", "delta"] = Field(
        "hive",
        description="hive: plain Snappy Parquet files in year=/month=/day= directories, readable by any Parquet "
        "reader (the default). delta: each stream dataset is a Delta Lake table (delta-rs) with the same "
        "directories, the Kafka offsets in its log; read it with a Delta-aware reader (docs/lake-delta.md).",
    )
    delta_checkpoint_interval: int = Field(
        10,
        ge=1,
        description="delta.checkpointInterval of the Delta tables txlake creates: a checkpoint every N commits keeps "
        "the cost of a commit and of opening the table flat.",
    )
    delta_vacuum_retention_hours: float = Field(
        168.0,
        ge=1,
        description="vacuum removes files no longer in the Delta table (replaced by optimize, or written by a crashed "
        "commit) once this old. Readers of older table versions and commits still in flight need them: keep it "
        "well above the longest query and commit.",
    )

    root: Path | str = Field(
        Path("lake"),
        description="Lake root: a local directory, or s3://bucket/prefix for an S3 (or S3-compatible) lake "
        "shared by every pod. Datasets live under streams/ and tables/.",
    )
    compression: str = Field("snappy", description="Parquet codec (snappy, zstd, gzip, none).")
    fsync: bool = Field(
        True,
        description="fsync data files and the ledger before a batch counts as landed (survives power loss, "
        "not only process crashes). Off is safe against process crashes and faster on slow disks. "
        "Ignored for S3 (an upload is durable once acknowledged).",
    )
    staging_grace_s: float = Field(
        600.0,
        ge=0,
        description="Uncommitted staged files (left by a crash, invisible to readers) are deleted once "
        "this old; younger ones may belong to a worker still landing during a rebalance.",
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3 endpoint for S3-compatible stores (MinIO, Ceph, ...); unset: AWS S3."
    )
    s3_region: str | None = Field(None, description="S3 region; unset: the AWS SDK's default (AWS_REGION, profile).")
    s3_access_key_id: str | None = Field(
        None, description="S3 access key; unset: the standard AWS credential chain (env, IRSA, instance profile)."
    )
    s3_secret_access_key: SecretStr | None = Field(None, description="S3 secret key, with s3_access_key_id.")
    compaction: CompactionSettings = CompactionSettings()

    @field_validator("root", mode="before")
    @classmethod
    def _local_path_or_s3_uri(cls, value: object) -> object:
        """``s3://…`` stays a string (a Path would fold its ``//``); anything else is a local Path."""
        if isinstance(value, str) and not value.lower().startswith("s3://"):
            return Path(value)
        return value

    @property
    def is_s3(self) -> bool:
        """Whether the lake lives in S3 rather than a local directory."""
        return isinstance(self.root, str)


class BatchingSettings(_Section):
    """When a batch is flushed: whichever comes first (Kafka Connect's S3 sink vocabulary)."""

    flush_size: int = Field(1000, ge=1, le=100_000, description="Records per batch.")
    rotate_interval_ms: int = Field(
        30_000, ge=10, description="Longest wait for a batch to fill, counted from the previous flush."
    )


class ErrorsSettings(_Section):
    """What happens to bad records and failing sinks."""

    deadletterqueue_topic_name: str = Field(
        "txlake-dead-letters",
        description="Topic that receives undecodable or invalid records (errors.deadletterqueue.topic.name).",
    )
    retry_backoff_ms: int = Field(200, ge=1, description="First wait before a failed sink write is retried.")
    retry_backoff_max_ms: int = Field(30_000, ge=1, description="Longest wait between two retries.")


class AnonymizationSettings(_Section):
    """The keyed hash behind the anonymized stream."""

    key: SecretStr = Field(
        SecretStr(LOCAL_ANONYMIZATION_KEY),
        description="HMAC key; set a real secret in production (the same on every worker).",
    )


class WebSettings(_Section):
    """The worker's HTTP server (metrics and health)."""

    host: str = Field("0.0.0.0", description="Address the worker's HTTP server binds to.")  # noqa: S104 - reachable in a pod
    port: int = Field(6066, ge=1, le=65535, description="Port of /metrics, /livez, /readyz, /snapshots and /exports.")
    max_request_bytes: int = Field(
        65_536, ge=0, description="Largest request body the web server accepts (413 above; 411 without a length)."
    )
    faust_sensors: bool = Field(
        True,
        description="Also export Faust's own per-message sensors (faust_*) on /metrics. They update "
        "labelled metrics for every message: off saves ~15-20% CPU at high rates.",
    )
    api_token: SecretStr | None = Field(
        None,
        description="Bearer token required by POST /snapshots/{table} and /exports; unset: taking snapshots "
        "over HTTP is disabled (403) and /exports is off (404), never open. "
        "Reading (GET /snapshots) needs no token.",
    )


class KsqlDBSettings(_Section):
    """The ksqlDB server that batch exports read from (REST API)."""

    url: str = Field("http://127.0.0.1:8088", description="ksqlDB REST endpoint (https:// for TLS).")
    username: str | None = Field(None, description="Basic auth user; unset: no authentication.")
    password: SecretStr | None = Field(None, description="Basic auth password, with username.")
    ca_file: Path | None = Field(None, description="PEM file of the CA that signed the server certificate.")
    verify: bool = Field(True, description="Verify the server's TLS certificate (off only for a lab).")
    http2: bool = Field(True, description="Use HTTP/2 when the server offers it over TLS (needs the h2 package).")
    connect_timeout_s: float = Field(10.0, gt=0, description="Time to open a connection.")
    read_timeout_s: float = Field(60.0, gt=0, description="Longest silence (no byte at all) inside a response.")
    stall_timeout_s: float = Field(
        300.0, gt=0, description="Longest time a query may send keep-alives without a row before it counts as stalled."
    )
    retries: int = Field(4, ge=0, le=20, description="Retries of a request that failed before any row arrived.")
    retry_backoff_s: float = Field(0.5, gt=0, description="First wait between retries (doubles, with jitter).")


class SnapshotSettings(_Section):
    """Snapshot versions of the four tables (docs/snapshots-and-exports.md)."""

    schedule: str | None = Field(
        "0 0 * * *",
        description="Cron expression (UTC) for scheduled versions of every table; empty/null: no schedule.",
    )
    retention_versions: int = Field(
        30, ge=1, description="Complete versions kept per table; older ones expire (rows and lake files removed)."
    )
    lease_s: float = Field(
        120.0,
        gt=0,
        description="A building version whose taker has not renewed its lease for this long is failed by recovery.",
    )
    maintenance_interval_s: float = Field(
        60.0, gt=0, description="How often a worker runs recovery (fail abandoned, publish pending) and retention."
    )
    rows_per_file: int = Field(1_000_000, ge=1, description="Rows per Parquet file of a version.")
    row_group_rows: int = Field(65_536, ge=1, description="Rows per Parquet row group (memory per taker).")

    @field_validator("schedule")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if not value:
            return None
        from croniter import croniter

        if not croniter.is_valid(value):
            raise ValueError(f"not a cron expression: {value!r}")
        return value


class TablesSettings(_Section):
    """The four tables: derived by txlake itself, or read from ksqlDB's changelog topics."""

    derive: bool = Field(
        True,
        description="Derive the four tables from the transaction stream (docs/tables.md) and write their "
        "changelog topics in ksqlDB's format. Turn off where ksqlDB produces those topics.",
    )
    deltas_topic: str = Field(
        "txlake-table-deltas",
        description="Internal topic carrying per-key contributions from the transaction stream to the "
        "table partitions (co-partitioned with the transaction topic).",
    )
    exchange_rates_file: Path | None = Field(
        None, description="TOML file of EUR rates (CURRENCY = \"rate\"); default: the file shipped with txlake."
    )
    commit_interval_ms: int = Field(
        1000,
        ge=10,
        description="Longest time folded deltas wait before their window is flushed to the changelogs and the "
        "table topics (Kafka Streams' commit.interval.ms). A window is also flushed as soon as the derivation "
        "has caught up with the deltas topic, so this bounds the delay only under a backlog.",
    )
    cache_max_keys: int = Field(
        50_000,
        ge=1,
        description="Keys a window may touch before it is flushed (the record cache's bound; ~1 KB of memory "
        "each while in the window).",
    )
    partitions: int | None = Field(
        None,
        ge=1,
        description="Partition count of the table side (the deltas topic, the table state's changelogs and the "
        "four table topics) when txlake creates them; unset: the transaction topic's. It bounds how many "
        "tables-role workers share the work.",
    )


class StreamsSettings(_Section):
    """The three derived streams: written by txlake itself, or by ksqlDB (docs/derived-streams.md)."""

    derive: bool | None = Field(
        None,
        description="Derive transaction_flattened, transaction_stream_anonymized and transaction_stream_blacklisted "
        "from the transaction stream and write their topics in ksqlDB's format, exactly once (Kafka "
        "transactions). Unset: on exactly when tables.derive is on. Turn off where ksqlDB produces these topics.",
    )
    transaction_timeout_ms: int = Field(
        60_000,
        ge=1000,
        le=900_000,
        description="transaction.timeout.ms of the derivation's transactional producers: the longest a killed "
        "worker's open transaction can hold back read_committed consumers of the derived topics (the worker "
        "that takes the partition over aborts it at once).",
    )
    position_refresh_s: float = Field(
        3600.0,
        gt=0,
        description="The derivation's position is the committed offsets of the group <group_id>-derived-streams, "
        "which has no members: Kafka expires such offsets offsets.retention.minutes (7 days by default) after "
        "their last commit. A partition with no new transactions for this long has its position committed again.",
    )


class HealthSettings(_Section):
    """Liveness and lag polling."""

    stall_timeout_s: float = Field(
        180.0,
        gt=0,
        description="/livez fails when a partition has lag but its feed took no batch for this long "
        "(keep it above rotate_interval_ms).",
    )
    lag_interval_s: float = Field(15.0, gt=0, description="How often consumer lag is polled from Kafka.")


class Settings(BaseSettings):
    """Everything txlake reads from its environment. Immutable once built."""

    model_config = SettingsConfigDict(
        env_prefix="TXLAKE_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    kafka: KafkaSettings = KafkaSettings()
    mysql: MySQLSettings = MySQLSettings()
    lake: LakeSettings = LakeSettings()
    batching: BatchingSettings = BatchingSettings()
    errors: ErrorsSettings = ErrorsSettings()
    anonymization: AnonymizationSettings = AnonymizationSettings()
    blacklist: Blacklist = Blacklist()
    web: WebSettings = WebSettings()
    health: HealthSettings = HealthSettings()
    tables: TablesSettings = TablesSettings()
    streams: StreamsSettings = StreamsSettings()
    ksqldb: KsqlDBSettings = KsqlDBSettings()
    snapshots: SnapshotSettings = SnapshotSettings()
    feeds_file: Path | None = Field(
        None, description="TOML file describing the feeds; default: the feeds.toml shipped with txlake."
    )
    topic_suffix: str = Field(
        "", description="Appended to every feed topic and the dead-letter topic (isolates tests and demos)."
    )
    datadir: Path = Field(Path(".txlake"), description="Faust's local state directory.")
    log_level: str = Field("INFO", description="Python log level of the worker and the CLI (DEBUG, INFO, WARNING, ...).")
    log_format: Literal["json", "text"] = Field("json", description="json lines for log shippers, text by hand.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        secrets = NestedSecretsSettingsSource(
            file_secret_settings,
            secrets_dir=os.environ.get("TXLAKE_SECRETS_DIR", DEFAULT_SECRETS_DIR),
            secrets_dir_missing="ok",
            secrets_prefix="",
        )
        environment = ListFriendlyEnvSource(settings_cls)
        dotenv = ListFriendlyDotEnvSource(
            settings_cls,
            env_file=getattr(dotenv_settings, "env_file", None),
            env_file_encoding=getattr(dotenv_settings, "env_file_encoding", None),
        )
        return init_settings, environment, dotenv, secrets

    def local_defaults_in_use(self) -> list[str]:
        """Secrets still at their local-demo defaults (the worker warns about each at start)."""
        found = []
        if self.anonymization.key.get_secret_value() == LOCAL_ANONYMIZATION_KEY:
            found.append("anonymization.key")
        if self.mysql.password.get_secret_value() == "txlake-local":
            found.append("mysql.password")
        return found

    @property
    def dead_letter_topic(self) -> str:
        return self.errors.deadletterqueue_topic_name + self.topic_suffix

    @property
    def table_deltas_topic(self) -> str:
        return self.tables.deltas_topic + self.topic_suffix

    @property
    def table_group_id(self) -> str:
        """The consumer group of the table derivation on the deltas topic: ``<group_id>-tables``."""
        return f"{self.kafka.group_id}-tables"

    @property
    def derives_streams(self) -> bool:
        """Whether the worker derives the three derived streams (``streams.derive``, default ``tables.derive``)."""
        return self.tables.derive if self.streams.derive is None else self.streams.derive

    @property
    def derived_streams_group(self) -> str:
        """The consumer group whose committed offsets are the stream derivation's position (no members)."""
        return f"{self.kafka.group_id}-derived-streams"

    @property
    def faust_app_id(self) -> str:
        """The Faust app id (and its consumer group) of the worker: ``<group_id>-control``."""
        return f"{self.kafka.group_id}-control"
