-- txlake warehouse: snapshot versions of the four tables, and the BI views over live and latest state.
-- Does not name a database: apply with `mariadb --database=<db>` after 03_create_fact_tables.sql.
-- Idempotent (CREATE TABLE IF NOT EXISTS, CREATE OR REPLACE VIEW). The application user needs only
-- SELECT/INSERT/UPDATE/DELETE on these at run time (see app/snapshots/ and docs/snapshots-and-exports.md).

-- One row per snapshot version of a table. A version's fact rows (snapshot_version = N) are inserted in
-- the same transaction that flips status to 'complete': readers that join on status = 'complete' never
-- see a building or failed version. Numbers grow per table and are allocated under the row lock of
-- txlake_snapshot_tables (MAX + 1); failed and expired versions keep their number (gaps are normal).
-- trigger_key is unique per table: several workers firing the same schedule make one version. A failed
-- version's key gets the suffix '#failed-v<N>' so the same trigger can be retried.
CREATE TABLE IF NOT EXISTS txlake_snapshot_versions (
  table_name         VARCHAR(128)  NOT NULL,
  version            INT           NOT NULL,
  status             ENUM('building', 'complete', 'failed', 'expired') NOT NULL DEFAULT 'building',
  triggered_by       ENUM('schedule', 'manual', 'export') NOT NULL,
  trigger_key        VARCHAR(255)  NOT NULL COMMENT 'e.g. schedule:2026-11-26T00:00Z, manual:<uuid>',
  snapshot_date      DATE          NOT NULL,
  source             JSON          NULL COMMENT 'where the rows came from (kind, details)',
  source_offsets     JSON          NULL COMMENT '{topic: {partition: landed_through}} the rows reflect',
  row_count          BIGINT        NULL,
  owner              VARCHAR(255)  NOT NULL COMMENT 'host:pid of the taker (building versions)',
  heartbeat_at       TIMESTAMP(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6) COMMENT 'lease of a building version',
  lake_staging_path  VARCHAR(1024) NULL COMMENT 'staged Parquet files, until published or removed',
  lake_path          VARCHAR(1024) NULL COMMENT 'tables/<table>/version=v<N> once published, until removed',
  published_at       TIMESTAMP(6)  NULL COMMENT 'when the lake copy became visible',
  created_at         TIMESTAMP(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  completed_at       TIMESTAMP(6)  NULL,
  error              TEXT          NULL,
  PRIMARY KEY (table_name, version),
  UNIQUE KEY uq_snapshot_trigger (table_name, trigger_key),
  KEY idx_snapshot_status (status, table_name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- One row per table that has versions: its row lock serialises version-number allocation
-- (SELECT ... FOR UPDATE), so two workers never pick the same number and never deadlock on gap locks.
CREATE TABLE IF NOT EXISTS txlake_snapshot_tables (
  table_name  VARCHAR(128) NOT NULL,
  PRIMARY KEY (table_name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- BI views: the live state (kept current by the table feeds), and the latest complete version.
CREATE OR REPLACE SQL SECURITY INVOKER VIEW v_fact_user_transaction_summary_live AS
SELECT * FROM fact_user_transaction_summary WHERE snapshot_version = 0;

CREATE OR REPLACE SQL SECURITY INVOKER VIEW v_fact_user_transaction_summary_latest AS
SELECT f.* FROM fact_user_transaction_summary AS f
WHERE f.snapshot_version = (SELECT MAX(v.version) FROM txlake_snapshot_versions AS v
                            WHERE v.table_name = 'user_transaction_summary' AND v.status = 'complete');

CREATE OR REPLACE SQL SECURITY INVOKER VIEW v_fact_user_transaction_summary_eur_live AS
SELECT * FROM fact_user_transaction_summary_eur WHERE snapshot_version = 0;

CREATE OR REPLACE SQL SECURITY INVOKER VIEW v_fact_user_transaction_summary_eur_latest AS
SELECT f.* FROM fact_user_transaction_summary_eur AS f
WHERE f.snapshot_version = (SELECT MAX(v.version) FROM txlake_snapshot_versions AS v
                            WHERE v.table_name = 'user_transaction_summary_eur' AND v.status = 'complete');

CREATE OR REPLACE SQL SECURITY INVOKER VIEW v_fact_payment_method_totals_live AS
SELECT * FROM fact_payment_method_totals WHERE snapshot_version = 0;

CREATE OR REPLACE SQL SECURITY INVOKER VIEW v_fact_payment_method_totals_latest AS
SELECT f.* FROM fact_payment_method_totals AS f
WHERE f.snapshot_version = (SELECT MAX(v.version) FROM txlake_snapshot_versions AS v
                            WHERE v.table_name = 'payment_method_totals' AND v.status = 'complete');

CREATE OR REPLACE SQL SECURITY INVOKER VIEW v_fact_product_purchase_counts_live AS
SELECT * FROM fact_product_purchase_counts WHERE snapshot_version = 0;

CREATE OR REPLACE SQL SECURITY INVOKER VIEW v_fact_product_purchase_counts_latest AS
SELECT f.* FROM fact_product_purchase_counts AS f
WHERE f.snapshot_version = (SELECT MAX(v.version) FROM txlake_snapshot_versions AS v
                            WHERE v.table_name = 'product_purchase_counts' AND v.status = 'complete');
