-- txlake: EUR exchange rates for the EUR-valued tables. Same content as app/exchange_rates.toml
-- (or the file tables.exchange_rates_file names): one row per currency, EUR per unit.
-- RATE_TO_EUR is DECIMAL(18, 8) so that cents * rate is exact, as in txlake's derivation (a rate in
-- the file must fit it: at most 8 decimals).

CREATE TABLE IF NOT EXISTS EXCHANGE_RATES (
  CURRENCY    STRING PRIMARY KEY,
  RATE_TO_EUR DECIMAL(18, 8)
) WITH (KAFKA_TOPIC = 'EXCHANGE_RATES', KEY_FORMAT = 'KAFKA', VALUE_FORMAT = 'JSON', PARTITIONS = 1);

INSERT INTO EXCHANGE_RATES (CURRENCY, RATE_TO_EUR) VALUES ('EUR', 1);
INSERT INTO EXCHANGE_RATES (CURRENCY, RATE_TO_EUR) VALUES ('USD', 0.92);
INSERT INTO EXCHANGE_RATES (CURRENCY, RATE_TO_EUR) VALUES ('GBP', 1.17);
INSERT INTO EXCHANGE_RATES (CURRENCY, RATE_TO_EUR) VALUES ('CHF', 1.05);
INSERT INTO EXCHANGE_RATES (CURRENCY, RATE_TO_EUR) VALUES ('JPY', 0.0062);
INSERT INTO EXCHANGE_RATES (CURRENCY, RATE_TO_EUR) VALUES ('SEK', 0.087);
