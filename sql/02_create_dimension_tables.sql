-- txlake warehouse: dimension tables and the MySQL sink's offset ledger.
-- Does not name a database: apply with `mariadb --database=<db>` (or USE <db> beforehand).
-- Idempotent: CREATE TABLE IF NOT EXISTS everywhere.
-- Key columns compare byte for byte: COLLATE utf8mb4_nopad_bin (binary AND no padding: 'a', 'a ' and
-- 'A' are three keys; utf8mb4_bin is a PAD SPACE collation, for which 'a' = 'a '). This is MariaDB's
-- name; on MySQL 8 use utf8mb4_0900_bin (docs/warehouse-keys.md). An existing warehouse:
-- sql/06_migrate_exact_keys_and_wide_money.sql.

-- Users. Upserted by the sinks with "latest event wins": a row is only overwritten by an event whose
-- event time is >= last_event_at. A fact can arrive before its user; the sink then inserts a
-- placeholder row with is_inferred = TRUE (late-arriving dimension), completed later by the real event.
CREATE TABLE IF NOT EXISTS dim_users (
  user_id        VARCHAR(64)  COLLATE utf8mb4_nopad_bin NOT NULL COMMENT 'byte for byte: ids differing in case, accents, trailing spaces or ignorable characters are different users',
  user_name      VARCHAR(255) NULL,
  user_email     VARCHAR(320) NULL,
  user_country   VARCHAR(64)  NULL,
  user_city      VARCHAR(128) NULL,
  last_event_at  DATETIME(6)  NULL COMMENT 'event time of the event that last set this row',
  is_inferred    BOOLEAN      NOT NULL DEFAULT FALSE COMMENT 'placeholder for a late-arriving dimension',
  created_at     TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  updated_at     TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
  PRIMARY KEY (user_id),
  KEY idx_dim_users_country (user_country)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Payment methods (same "latest event wins" / inferred-member rules as dim_users).
CREATE TABLE IF NOT EXISTS dim_payment_methods (
  payment_method_id        VARCHAR(64)  COLLATE utf8mb4_nopad_bin NOT NULL COMMENT 'byte for byte (see dim_users.user_id)',
  payment_method_name      VARCHAR(128) NULL,
  payment_method_category  VARCHAR(64)  NULL,
  is_active                BOOLEAN      NOT NULL DEFAULT TRUE,
  last_event_at            DATETIME(6)  NULL COMMENT 'event time of the event that last set this row',
  is_inferred              BOOLEAN      NOT NULL DEFAULT FALSE COMMENT 'placeholder for a late-arriving dimension',
  created_at               TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  updated_at               TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
  PRIMARY KEY (payment_method_id),
  KEY idx_dim_payment_methods_category (payment_method_category)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Exactly-once ledger of the MySQL sink: for each (feed, topic, partition), the highest Kafka offset
-- whose rows are committed. Written in the same transaction as the rows, so after a crash the sink
-- skips every record at or below landed_through.
CREATE TABLE IF NOT EXISTS txlake_offset_ledger (
  feed             VARCHAR(128) COLLATE utf8mb4_nopad_bin NOT NULL,
  topic            VARCHAR(249) COLLATE utf8mb4_nopad_bin NOT NULL COMMENT 'Kafka topic names are case-sensitive',
  kafka_partition  INT          NOT NULL,
  landed_through   BIGINT       NOT NULL COMMENT 'highest Kafka offset whose rows are committed',
  updated_at       TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
  PRIMARY KEY (feed, topic, kafka_partition)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
