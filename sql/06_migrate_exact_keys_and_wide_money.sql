-- txlake warehouse migration: byte-exact keys and wide money, for a warehouse built by an earlier
-- sql/02, sql/03 and sql/05 (keys in utf8mb4_bin or utf8mb4_unicode_ci, money in DECIMAL(18,x)).
-- A new warehouse does not need it: sql/02, 03 and 05 create these definitions directly.
-- Does not name a database: apply with `mariadb --database=<db> < sql/06_migrate_exact_keys_and_wide_money.sql`
-- as the schema owner (ALTER privilege). Idempotent: applying it twice changes nothing.
-- Each ALTER rebuilds its table and locks it meanwhile: workers wait (lock_wait_timeout) and retry.
-- Keys that the old PAD SPACE collation had already merged stay merged: see docs/warehouse-keys.md
-- ("An existing warehouse") for finding them with `txlake verify` and re-landing.
-- MySQL 8: replace utf8mb4_nopad_bin with utf8mb4_0900_bin throughout (docs/warehouse-keys.md).

-- A column in a foreign key cannot change its collation: the three foreign keys are dropped first
-- and added again, as sql/03 defines them, once both sides are byte-exact (adding checks every row).
ALTER TABLE fact_user_transaction_summary DROP FOREIGN KEY IF EXISTS fk_fact_uts_user;
ALTER TABLE fact_user_transaction_summary_eur DROP FOREIGN KEY IF EXISTS fk_fact_uts_eur_user;
ALTER TABLE fact_payment_method_totals DROP FOREIGN KEY IF EXISTS fk_fact_pmt_payment_method;

ALTER TABLE dim_users
  MODIFY user_id VARCHAR(64) COLLATE utf8mb4_nopad_bin NOT NULL COMMENT 'byte for byte: ids differing in case, accents, trailing spaces or ignorable characters are different users';

ALTER TABLE dim_payment_methods
  MODIFY payment_method_id VARCHAR(64) COLLATE utf8mb4_nopad_bin NOT NULL COMMENT 'byte for byte (see dim_users.user_id)';

ALTER TABLE txlake_offset_ledger
  MODIFY feed VARCHAR(128) COLLATE utf8mb4_nopad_bin NOT NULL,
  MODIFY topic VARCHAR(249) COLLATE utf8mb4_nopad_bin NOT NULL COMMENT 'Kafka topic names are case-sensitive';

ALTER TABLE fact_user_transaction_summary
  MODIFY user_id VARCHAR(64) COLLATE utf8mb4_nopad_bin NOT NULL,
  MODIFY transaction_type VARCHAR(64) COLLATE utf8mb4_nopad_bin NOT NULL,
  MODIFY total_amount DECIMAL(38,2) NULL,
  MODIFY avg_amount DECIMAL(38,4) NULL;

ALTER TABLE fact_user_transaction_summary_eur
  MODIFY user_id VARCHAR(64) COLLATE utf8mb4_nopad_bin NOT NULL,
  MODIFY transaction_type VARCHAR(64) COLLATE utf8mb4_nopad_bin NOT NULL,
  MODIFY total_amount_eur DECIMAL(38,2) NULL,
  MODIFY avg_amount_eur DECIMAL(38,4) NULL;

ALTER TABLE fact_payment_method_totals
  MODIFY payment_method_id VARCHAR(64) COLLATE utf8mb4_nopad_bin NOT NULL,
  MODIFY total_amount DECIMAL(38,2) NULL,
  MODIFY avg_amount DECIMAL(38,4) NULL;

ALTER TABLE fact_product_purchase_counts
  MODIFY product_id VARCHAR(64) COLLATE utf8mb4_nopad_bin NOT NULL COMMENT 'byte for byte (see dim_users.user_id)',
  MODIFY total_revenue DECIMAL(38,2) NULL,
  MODIFY avg_price DECIMAL(38,4) NULL;

ALTER TABLE txlake_snapshot_versions
  MODIFY table_name VARCHAR(128) COLLATE utf8mb4_nopad_bin NOT NULL,
  MODIFY trigger_key VARCHAR(255) COLLATE utf8mb4_nopad_bin NOT NULL COMMENT 'e.g. schedule:2026-11-26T00:00Z, manual:<uuid>';

ALTER TABLE txlake_snapshot_tables
  MODIFY table_name VARCHAR(128) COLLATE utf8mb4_nopad_bin NOT NULL;

ALTER TABLE fact_user_transaction_summary
  ADD CONSTRAINT fk_fact_uts_user FOREIGN KEY (user_id) REFERENCES dim_users (user_id) ON DELETE CASCADE;
ALTER TABLE fact_user_transaction_summary_eur
  ADD CONSTRAINT fk_fact_uts_eur_user FOREIGN KEY (user_id) REFERENCES dim_users (user_id) ON DELETE CASCADE;
ALTER TABLE fact_payment_method_totals
  ADD CONSTRAINT fk_fact_pmt_payment_method FOREIGN KEY (payment_method_id)
    REFERENCES dim_payment_methods (payment_method_id) ON DELETE CASCADE;
