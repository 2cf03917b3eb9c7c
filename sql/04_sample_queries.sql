-- txlake warehouse: sample BI queries (read-only; run them as the application user).
-- Does not name a database. snapshot_version = 0 is the live state, N > 0 a batch snapshot.
-- Each statement is preceded by a comment line and ends with a semicolon at the end of a line.

-- 1. Top 10 users by total spend (live state), with their dimension attributes.
SELECT u.user_id, u.user_name, u.user_country,
       SUM(f.total_amount) AS total_spend,
       SUM(f.transaction_count) AS transactions
FROM fact_user_transaction_summary AS f
JOIN dim_users AS u ON u.user_id = f.user_id
WHERE f.snapshot_version = 0
GROUP BY u.user_id, u.user_name, u.user_country
ORDER BY total_spend DESC
LIMIT 10;

-- 2. Totals per country (live state, EUR), with the number of active users.
SELECT COALESCE(u.user_country, 'unknown') AS country,
       COUNT(DISTINCT f.user_id) AS users,
       SUM(f.transaction_count) AS transactions,
       SUM(f.total_amount_eur) AS total_amount_eur,
       SUM(f.total_amount_eur) / NULLIF(SUM(f.transaction_count), 0) AS avg_amount_eur
FROM fact_user_transaction_summary_eur AS f
JOIN dim_users AS u ON u.user_id = f.user_id
WHERE f.snapshot_version = 0
GROUP BY COALESCE(u.user_country, 'unknown')
ORDER BY total_amount_eur DESC;

-- 3. Payment method share of the total amount (live state), by category.
SELECT p.payment_method_id,
       COALESCE(p.payment_method_name, t.payment_method_name) AS payment_method_name,
       p.payment_method_category,
       t.total_amount,
       t.transaction_count,
       ROUND(100 * t.total_amount / NULLIF(SUM(t.total_amount) OVER (), 0), 2) AS share_pct
FROM fact_payment_method_totals AS t
JOIN dim_payment_methods AS p ON p.payment_method_id = t.payment_method_id
WHERE t.snapshot_version = 0
ORDER BY t.total_amount DESC;

-- 4. Spend per transaction type and city (fact x dimension join, live state).
SELECT u.user_country, u.user_city, f.transaction_type,
       SUM(f.total_amount) AS total_amount,
       SUM(f.transaction_count) AS transaction_count
FROM fact_user_transaction_summary AS f
JOIN dim_users AS u ON u.user_id = f.user_id
WHERE f.snapshot_version = 0
GROUP BY u.user_country, u.user_city, f.transaction_type
ORDER BY total_amount DESC;

-- 5. Top 10 products by revenue (live state).
SELECT product_id, product_name, product_category,
       purchase_count, unique_buyers, total_revenue, avg_price
FROM fact_product_purchase_counts
WHERE snapshot_version = 0
ORDER BY total_revenue DESC
LIMIT 10;

-- 6. Latest snapshot version (and its date and row count) per fact table.
SELECT 'fact_user_transaction_summary' AS fact_table, MAX(snapshot_version) AS latest_version,
       MAX(snapshot_date) AS latest_snapshot_date, COUNT(*) AS rows_in_latest
FROM fact_user_transaction_summary
WHERE snapshot_version = (SELECT COALESCE(MAX(snapshot_version), 0) FROM fact_user_transaction_summary)
UNION ALL
SELECT 'fact_user_transaction_summary_eur', MAX(snapshot_version), MAX(snapshot_date), COUNT(*)
FROM fact_user_transaction_summary_eur
WHERE snapshot_version = (SELECT COALESCE(MAX(snapshot_version), 0) FROM fact_user_transaction_summary_eur)
UNION ALL
SELECT 'fact_payment_method_totals', MAX(snapshot_version), MAX(snapshot_date), COUNT(*)
FROM fact_payment_method_totals
WHERE snapshot_version = (SELECT COALESCE(MAX(snapshot_version), 0) FROM fact_payment_method_totals)
UNION ALL
SELECT 'fact_product_purchase_counts', MAX(snapshot_version), MAX(snapshot_date), COUNT(*)
FROM fact_product_purchase_counts
WHERE snapshot_version = (SELECT COALESCE(MAX(snapshot_version), 0) FROM fact_product_purchase_counts);

-- 7. Dimension freshness: members, inferred placeholders still waiting for their real event, latest event time.
SELECT 'dim_users' AS dimension, COUNT(*) AS members, SUM(is_inferred) AS inferred_members,
       MAX(last_event_at) AS latest_event_at, MAX(updated_at) AS latest_update_at
FROM dim_users
UNION ALL
SELECT 'dim_payment_methods', COUNT(*), SUM(is_inferred), MAX(last_event_at), MAX(updated_at)
FROM dim_payment_methods;

-- 8. Snapshot-over-snapshot change of total spend per user (latest snapshot vs the one before).
SELECT cur.user_id, cur.transaction_type,
       cur.total_amount AS latest_amount, prev.total_amount AS previous_amount,
       cur.total_amount - COALESCE(prev.total_amount, 0) AS delta
FROM fact_user_transaction_summary AS cur
LEFT JOIN fact_user_transaction_summary AS prev
  ON prev.user_id = cur.user_id
 AND prev.transaction_type = cur.transaction_type
 AND prev.snapshot_version = cur.snapshot_version - 1
WHERE cur.snapshot_version = (SELECT MAX(snapshot_version) FROM fact_user_transaction_summary)
  AND cur.snapshot_version > 0
ORDER BY delta DESC
LIMIT 20;

-- 9. Streaming sink progress: landed offsets per feed and topic, and how long ago they moved.
SELECT feed, topic, COUNT(*) AS partitions, SUM(landed_through + 1) AS offsets_landed,
       MAX(updated_at) AS last_commit_at,
       TIMESTAMPDIFF(SECOND, MAX(updated_at), CURRENT_TIMESTAMP(6)) AS seconds_since_last_commit
FROM txlake_offset_ledger
GROUP BY feed, topic
ORDER BY feed, topic;
