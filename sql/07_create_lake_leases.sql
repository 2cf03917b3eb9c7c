-- txlake warehouse: leases on lake maintenance work (compaction of a dataset-day, vacuum of a dataset).
-- Does not name a database: apply with `mariadb --database=<db>` after 05_create_snapshot_versions.sql.
-- Keys compare byte for byte (utf8mb4_nopad_bin; MySQL 8: utf8mb4_0900_bin, docs/warehouse-keys.md). Idempotent. The application user needs SELECT/INSERT/UPDATE/DELETE on it at run time (app/lake/lease.py).

-- One row per piece of maintenance work somebody holds or held: 'compact:streams/<s>:year=…/month=…/day=…'.
-- A holder renews expires_at every third of lake.compaction.lease_ms; a row whose expires_at has passed
-- may be taken over by another worker (its holder died or stalled). Times are the database's clock, so
-- workers' clocks do not matter. A released lease is deleted.
CREATE TABLE IF NOT EXISTS txlake_lake_leases (
  resource     VARCHAR(255) COLLATE utf8mb4_nopad_bin NOT NULL,
  owner        VARCHAR(255) COLLATE utf8mb4_nopad_bin NOT NULL COMMENT 'host:pid:token of the holder',
  acquired_at  TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  expires_at   TIMESTAMP(6) NOT NULL,
  PRIMARY KEY (resource)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
