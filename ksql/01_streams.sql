-- txlake: transaction_stream and the three derived streams (same semantics as models/derive.py;
-- with streams.derive on, txlake writes the same three topics itself: docs/derived-streams.md).
-- Source topic: `transactions`, keyed by transaction id, JSON values with upper-case names.
--
-- The wire format every derived stream shares (checked column by column against txlake's own
-- derivation by tests/unit/test_derived_messages.py):
--   key    TRANSACTION_ID as raw UTF-8 (KEY_FORMAT KAFKA, inherited from TRANSACTION_STREAM; the key
--          column is renamed TX_KEY because ksqlDB keeps a key column out of the value)
--   value  JSON, the columns below in this order, TRANSACTION_ID copied into it with AS_VALUE

CREATE STREAM IF NOT EXISTS TRANSACTION_STREAM (
  TRANSACTION_ID   STRING KEY,
  USER             STRUCT<ID STRING, NAME STRING, EMAIL STRING, COUNTRY STRING, CITY STRING>,
  AMOUNT           DOUBLE,
  CURRENCY         STRING,
  TRANSACTION_TYPE STRING,
  PAYMENT_METHOD   STRUCT<ID STRING, NAME STRING, CATEGORY STRING>,
  PRODUCTS         ARRAY<STRUCT<ID STRING, NAME STRING, CATEGORY STRING, PRICE DOUBLE, QUANTITY INT>>,
  STATUS           STRING,
  EVENT_TIMESTAMP  STRING
) WITH (KAFKA_TOPIC = 'transactions', KEY_FORMAT = 'KAFKA', VALUE_FORMAT = 'JSON',
        TIMESTAMP = 'EVENT_TIMESTAMP', TIMESTAMP_FORMAT = 'yyyy-MM-dd''T''HH:mm:ss.SSSX');

-- One row per product line, scalar columns only (models/derive.py `flatten`). The table
-- functions of one SELECT explode in lockstep, so each row holds one line; LINE_NUMBER counts from 1.
CREATE STREAM IF NOT EXISTS TRANSACTION_FLATTENED
  WITH (KAFKA_TOPIC = 'TRANSACTION_FLATTENED', VALUE_FORMAT = 'JSON') AS
  SELECT
    TRANSACTION_ID                                 AS TX_KEY,
    AS_VALUE(TRANSACTION_ID)                       AS TRANSACTION_ID,
    EXPLODE(GENERATE_SERIES(1, ARRAY_LENGTH(PRODUCTS))) AS LINE_NUMBER,
    USER->ID                                       AS USER_ID,
    USER->COUNTRY                                  AS USER_COUNTRY,
    AMOUNT, CURRENCY, TRANSACTION_TYPE,
    PAYMENT_METHOD->ID                             AS PAYMENT_METHOD_ID,
    PAYMENT_METHOD->NAME                           AS PAYMENT_METHOD_NAME,
    EXPLODE(TRANSFORM(PRODUCTS, p => p->ID))       AS PRODUCT_ID,
    EXPLODE(TRANSFORM(PRODUCTS, p => p->NAME))     AS PRODUCT_NAME,
    EXPLODE(TRANSFORM(PRODUCTS, p => p->CATEGORY)) AS PRODUCT_CATEGORY,
    EXPLODE(TRANSFORM(PRODUCTS, p => p->PRICE))    AS PRODUCT_PRICE,
    EXPLODE(TRANSFORM(PRODUCTS, p => p->QUANTITY)) AS PRODUCT_QUANTITY,
    EXPLODE(TRANSFORM(PRODUCTS, p => p->PRICE * p->QUANTITY)) AS LINE_TOTAL,
    STATUS, EVENT_TIMESTAMP
  FROM TRANSACTION_STREAM
  EMIT CHANGES;

-- Name and e-mail replaced by a keyed hash (models/derive.py `anonymize`): HMAC-SHA256 as 64 hex
-- digits, the e-mail becoming <hash>@anonymized.invalid. ksqlDB has no HMAC function: this needs a
-- UDF named HMAC_SHA256_HEX(key, value) on the ksqlDB server, or let txlake's producer write the
-- stream. ${ANONYMIZATION_KEY} is the anonymization.key secret (substitute it; never commit it).
CREATE STREAM IF NOT EXISTS TRANSACTION_STREAM_ANONYMIZED
  WITH (KAFKA_TOPIC = 'TRANSACTION_STREAM_ANONYMIZED', VALUE_FORMAT = 'JSON') AS
  SELECT
    TRANSACTION_ID                                 AS TX_KEY,
    AS_VALUE(TRANSACTION_ID)                       AS TRANSACTION_ID,
    STRUCT(ID := USER->ID,
           NAME := HMAC_SHA256_HEX('${ANONYMIZATION_KEY}', USER->NAME),
           EMAIL := HMAC_SHA256_HEX('${ANONYMIZATION_KEY}', USER->EMAIL) + '@anonymized.invalid',
           COUNTRY := USER->COUNTRY, CITY := USER->CITY) AS USER,
    AMOUNT, CURRENCY, TRANSACTION_TYPE, PAYMENT_METHOD, PRODUCTS, STATUS, EVENT_TIMESTAMP
  FROM TRANSACTION_STREAM
  EMIT CHANGES;

-- Transactions whose user, e-mail domain, country or payment method is blacklisted
-- (models/derive.py `blacklisted`): BLACKLIST_REASON lists every rule matched, in the order
-- user, email_domain, country, payment_method, joined with '; ' (e.g. 'user:U00042; country:RU').
-- Substitute the blacklist.* settings as quoted lists, e.g. ${BLACKLISTED_COUNTRIES} = 'ru', 'kp'
-- (domains and countries lower-cased: they match case-insensitively; ids exactly).
CREATE STREAM IF NOT EXISTS TRANSACTION_STREAM_BLACKLISTED
  WITH (KAFKA_TOPIC = 'TRANSACTION_STREAM_BLACKLISTED', VALUE_FORMAT = 'JSON') AS
  SELECT
    TRANSACTION_ID                                 AS TX_KEY,
    AS_VALUE(TRANSACTION_ID)                       AS TRANSACTION_ID,
    USER, AMOUNT, CURRENCY, TRANSACTION_TYPE, PAYMENT_METHOD, PRODUCTS, STATUS, EVENT_TIMESTAMP,
    ARRAY_JOIN(FILTER(ARRAY[
      CASE WHEN ARRAY_CONTAINS(ARRAY[${BLACKLISTED_USERS}], USER->ID) THEN 'user:' + USER->ID END,
      CASE WHEN ARRAY_CONTAINS(ARRAY[${BLACKLISTED_DOMAINS}], LCASE(SPLIT(USER->EMAIL, '@')[2]))
           THEN 'email_domain:' + SPLIT(USER->EMAIL, '@')[2] END,
      CASE WHEN ARRAY_CONTAINS(ARRAY[${BLACKLISTED_COUNTRIES}], LCASE(USER->COUNTRY)) THEN 'country:' + USER->COUNTRY END,
      CASE WHEN ARRAY_CONTAINS(ARRAY[${BLACKLISTED_PAYMENT_METHODS}], PAYMENT_METHOD->ID)
           THEN 'payment_method:' + PAYMENT_METHOD->ID END
    ], r => r IS NOT NULL), '; ') AS BLACKLIST_REASON
  FROM TRANSACTION_STREAM
  WHERE ARRAY_CONTAINS(ARRAY[${BLACKLISTED_USERS}], USER->ID)
     OR ARRAY_CONTAINS(ARRAY[${BLACKLISTED_DOMAINS}], LCASE(SPLIT(USER->EMAIL, '@')[2]))
     OR ARRAY_CONTAINS(ARRAY[${BLACKLISTED_COUNTRIES}], LCASE(USER->COUNTRY))
     OR ARRAY_CONTAINS(ARRAY[${BLACKLISTED_PAYMENT_METHODS}], PAYMENT_METHOD->ID)
  EMIT CHANGES;
