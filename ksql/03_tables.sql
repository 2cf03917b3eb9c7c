-- txlake: the four tables (same semantics as models/aggregates.py; keep both in step).
-- Key and value columns in the order of models/tables.py (checked by tests/unit/test_tables.py).
-- Only COMPLETED transactions count. payment_method_totals nets refunds (REFUND amounts count
-- negative); product_purchase_counts counts completed PURCHASE transactions, per product line.
--
-- Money (models/money.py; docs/decisions/0018-money-semantics.md): an amount or a unit price counts
-- in cents, CAST(x AS DECIMAL(15, 2)): precision 15 recovers the number as written from its DOUBLE
-- (every decimal of up to 15 digits survives a double), then it is rounded half-up to cents. From
-- there every step is exact DECIMAL arithmetic: EUR amounts are cents * RATE_TO_EUR (a currency
-- without a rate is dropped by the inner join), sums run in DECIMAL(38, s) (ksqlDB's SUM keeps its
-- argument's type and fails beyond it), and totals are rounded half-up to cents once, on output.
-- Averages are computed in DOUBLE: ksqlDB divides DECIMALs with RoundingMode.UNNECESSARY, which fails
-- on a quotient such as 10 / 3; the warehouse rounds them half-up to 4 decimals.
-- tests/unit/test_money_semantics.py evaluates these expressions with ksqlDB's arithmetic and checks
-- them against txlake's derivation.

-- Keyed by (USER_ID, TRANSACTION_TYPE): two key columns need KEY_FORMAT = 'JSON'.
CREATE TABLE IF NOT EXISTS USER_TRANSACTION_SUMMARY
  WITH (KAFKA_TOPIC = 'USER_TRANSACTION_SUMMARY', KEY_FORMAT = 'JSON', VALUE_FORMAT = 'JSON') AS
  SELECT
    USER->ID                 AS USER_ID,
    TRANSACTION_TYPE,
    SUM(CAST(CAST(AMOUNT AS DECIMAL(15, 2)) AS DECIMAL(38, 2))) AS TOTAL_AMOUNT,
    COUNT(*)                 AS TRANSACTION_COUNT,
    CAST(SUM(CAST(CAST(AMOUNT AS DECIMAL(15, 2)) AS DECIMAL(38, 2))) AS DOUBLE) / COUNT(*) AS AVG_AMOUNT
  FROM TRANSACTION_STREAM
  WHERE STATUS = 'COMPLETED'
  GROUP BY USER->ID, TRANSACTION_TYPE
  EMIT CHANGES;

-- The EUR-valued transactions once, for the two EUR tables: cents * rate, exact (DECIMAL(34, 10)),
-- widened to DECIMAL(38, 10) so that their sums have room.
CREATE STREAM IF NOT EXISTS TRANSACTION_STREAM_EUR
  WITH (KAFKA_TOPIC = 'TRANSACTION_STREAM_EUR', VALUE_FORMAT = 'JSON') AS
  SELECT
    T.CURRENCY               AS CURRENCY,
    T.USER->ID               AS USER_ID,
    T.TRANSACTION_TYPE       AS TRANSACTION_TYPE,
    T.PAYMENT_METHOD->ID     AS PAYMENT_METHOD_ID,
    T.PAYMENT_METHOD->NAME   AS PAYMENT_METHOD_NAME,
    CAST(CAST(T.AMOUNT AS DECIMAL(15, 2)) * R.RATE_TO_EUR AS DECIMAL(38, 10)) AS AMOUNT_EUR,
    R.RATE_TO_EUR            AS EXCHANGE_RATE
  FROM TRANSACTION_STREAM T
  JOIN EXCHANGE_RATES R ON T.CURRENCY = R.CURRENCY
  WHERE T.STATUS = 'COMPLETED'
  EMIT CHANGES;

CREATE TABLE IF NOT EXISTS USER_TRANSACTION_SUMMARY_EUR
  WITH (KAFKA_TOPIC = 'USER_TRANSACTION_SUMMARY_EUR', KEY_FORMAT = 'JSON', VALUE_FORMAT = 'JSON') AS
  SELECT
    USER_ID,
    TRANSACTION_TYPE,
    CAST(SUM(AMOUNT_EUR) AS DECIMAL(38, 2))    AS TOTAL_AMOUNT_EUR,
    COUNT(*)                                   AS TRANSACTION_COUNT,
    CAST(SUM(AMOUNT_EUR) AS DOUBLE) / COUNT(*) AS AVG_AMOUNT_EUR,
    LATEST_BY_OFFSET(EXCHANGE_RATE)            AS EXCHANGE_RATE
  FROM TRANSACTION_STREAM_EUR
  GROUP BY USER_ID, TRANSACTION_TYPE
  EMIT CHANGES;

CREATE TABLE IF NOT EXISTS PAYMENT_METHOD_TOTALS
  WITH (KAFKA_TOPIC = 'PAYMENT_METHOD_TOTALS', KEY_FORMAT = 'KAFKA', VALUE_FORMAT = 'JSON') AS
  SELECT
    PAYMENT_METHOD_ID,
    LATEST_BY_OFFSET(PAYMENT_METHOD_NAME) AS PAYMENT_METHOD_NAME,
    CAST(SUM(CASE WHEN TRANSACTION_TYPE = 'REFUND' THEN -AMOUNT_EUR ELSE AMOUNT_EUR END) AS DECIMAL(38, 2)) AS TOTAL_AMOUNT,
    COUNT(*) AS TRANSACTION_COUNT,
    CAST(SUM(CASE WHEN TRANSACTION_TYPE = 'REFUND' THEN -AMOUNT_EUR ELSE AMOUNT_EUR END) AS DOUBLE) / COUNT(*) AS AVG_AMOUNT
  FROM TRANSACTION_STREAM_EUR
  GROUP BY PAYMENT_METHOD_ID
  EMIT CHANGES;

-- Per product: units bought (BIGINT: a SUM of INT stays INT and overflows at 2^31), revenue
-- (unit price in cents * quantity), mean unit price over lines, distinct buyers.
CREATE TABLE IF NOT EXISTS PRODUCT_PURCHASE_COUNTS
  WITH (KAFKA_TOPIC = 'PRODUCT_PURCHASE_COUNTS', KEY_FORMAT = 'KAFKA', VALUE_FORMAT = 'JSON') AS
  SELECT
    PRODUCT_ID,
    LATEST_BY_OFFSET(PRODUCT_NAME)     AS PRODUCT_NAME,
    LATEST_BY_OFFSET(PRODUCT_CATEGORY) AS PRODUCT_CATEGORY,
    SUM(CAST(PRODUCT_QUANTITY AS BIGINT)) AS PURCHASE_COUNT,
    SUM(CAST(CAST(PRODUCT_PRICE AS DECIMAL(15, 2)) * PRODUCT_QUANTITY AS DECIMAL(38, 2))) AS TOTAL_REVENUE,
    CAST(SUM(CAST(CAST(PRODUCT_PRICE AS DECIMAL(15, 2)) AS DECIMAL(38, 2))) AS DOUBLE) / COUNT(*) AS AVG_PRICE,
    COUNT_DISTINCT(USER_ID)            AS UNIQUE_BUYERS
  FROM TRANSACTION_FLATTENED
  WHERE STATUS = 'COMPLETED' AND TRANSACTION_TYPE = 'PURCHASE'
  GROUP BY PRODUCT_ID
  EMIT CHANGES;
