-- txlake warehouse: fact tables (one per ksqlDB table).
-- Business columns, their order and types: models/tables.py (tests/integration/test_schema.py
-- checks this file against it on MariaDB).
-- Does not name a database: apply with `mariadb --database=<db>` after 02_create_dimension_tables.sql.
-- snapshot_version: 0 = the live state kept current by the streaming sink;
--                   N > 0 = batch snapshot version N (matches tables/<table>/version=vN/ in the lake).
-- Natural keys are UNIQUE so the sinks can upsert (INSERT ... ON DUPLICATE KEY UPDATE).
-- The three foreign keys cascade on delete: removing a dimension member removes its facts.
-- Key columns compare byte for byte (utf8mb4_nopad_bin, see sql/02). Money is sized for realistic
-- totals (models/money.py): totals DECIMAL(38,2) (ksqlDB's widest DECIMAL), averages DECIMAL(38,4),
-- rates DECIMAL(18,8); counts BIGINT.

CREATE TABLE IF NOT EXISTS fact_user_transaction_summary (
  summary_id         BIGINT        NOT NULL AUTO_INCREMENT,
  user_id            VARCHAR(64)   COLLATE utf8mb4_nopad_bin NOT NULL,
  transaction_type   VARCHAR(64)   COLLATE utf8mb4_nopad_bin NOT NULL,
  total_amount       DECIMAL(38,2) NULL,
  transaction_count  BIGINT        NULL,
  avg_amount         DECIMAL(38,4) NULL,
  snapshot_date      DATE          NULL,
  snapshot_version   INT           NOT NULL DEFAULT 0 COMMENT '0 = live state; N > 0 = snapshot version N',
  updated_at         TIMESTAMP(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
  PRIMARY KEY (summary_id),
  UNIQUE KEY uq_fact_uts_natural (user_id, transaction_type, snapshot_version),
  KEY idx_fact_uts_version (snapshot_version),
  CONSTRAINT fk_fact_uts_user FOREIGN KEY (user_id)
    REFERENCES dim_users (user_id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS fact_user_transaction_summary_eur (
  summary_eur_id     BIGINT        NOT NULL AUTO_INCREMENT,
  user_id            VARCHAR(64)   COLLATE utf8mb4_nopad_bin NOT NULL,
  transaction_type   VARCHAR(64)   COLLATE utf8mb4_nopad_bin NOT NULL,
  total_amount_eur   DECIMAL(38,2) NULL,
  transaction_count  BIGINT        NULL,
  avg_amount_eur     DECIMAL(38,4) NULL,
  exchange_rate      DECIMAL(18,8) NULL,
  snapshot_date      DATE          NULL,
  snapshot_version   INT           NOT NULL DEFAULT 0 COMMENT '0 = live state; N > 0 = snapshot version N',
  updated_at         TIMESTAMP(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
  PRIMARY KEY (summary_eur_id),
  UNIQUE KEY uq_fact_uts_eur_natural (user_id, transaction_type, snapshot_version),
  KEY idx_fact_uts_eur_version (snapshot_version),
  CONSTRAINT fk_fact_uts_eur_user FOREIGN KEY (user_id)
    REFERENCES dim_users (user_id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS fact_payment_method_totals (
  payment_total_id     BIGINT        NOT NULL AUTO_INCREMENT,
  payment_method_id    VARCHAR(64)   COLLATE utf8mb4_nopad_bin NOT NULL,
  payment_method_name  VARCHAR(128)  NULL,
  total_amount         DECIMAL(38,2) NULL,
  transaction_count    BIGINT        NULL,
  avg_amount           DECIMAL(38,4) NULL,
  snapshot_date        DATE          NULL,
  snapshot_version     INT           NOT NULL DEFAULT 0 COMMENT '0 = live state; N > 0 = snapshot version N',
  updated_at           TIMESTAMP(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
  PRIMARY KEY (payment_total_id),
  UNIQUE KEY uq_fact_pmt_natural (payment_method_id, snapshot_version),
  KEY idx_fact_pmt_version (snapshot_version),
  CONSTRAINT fk_fact_pmt_payment_method FOREIGN KEY (payment_method_id)
    REFERENCES dim_payment_methods (payment_method_id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Independent fact: no foreign key (products have no dimension table).
CREATE TABLE IF NOT EXISTS fact_product_purchase_counts (
  product_count_id   BIGINT        NOT NULL AUTO_INCREMENT,
  product_id         VARCHAR(64)   COLLATE utf8mb4_nopad_bin NOT NULL COMMENT 'byte for byte (see dim_users.user_id)',
  product_name       VARCHAR(255)  NULL,
  product_category   VARCHAR(128)  NULL,
  purchase_count     BIGINT        NULL,
  total_revenue      DECIMAL(38,2) NULL,
  avg_price          DECIMAL(38,4) NULL,
  unique_buyers      BIGINT        NULL,
  snapshot_date      DATE          NULL,
  snapshot_version   INT           NOT NULL DEFAULT 0 COMMENT '0 = live state; N > 0 = snapshot version N',
  updated_at         TIMESTAMP(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
  PRIMARY KEY (product_count_id),
  UNIQUE KEY uq_fact_ppc_natural (product_id, snapshot_version),
  KEY idx_fact_ppc_version (snapshot_version)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
