-- Stateless pipeline: datagen -> filter + projection -> blackhole.
-- ${NAME:-default} placeholders are filled in by bench/run.sh and bench/run_flink.py before the
-- script reaches either engine; everything else is plain Flink SQL.

CREATE TABLE events (
  event_id  BIGINT,
  user_id   INT,
  amount    DOUBLE,
  category  STRING
) WITH (
  'connector' = 'datagen',
  'rows-per-second' = '1000000000',
  'number-of-rows' = '${ROWS:-20000000}',
  'fields.user_id.min' = '1',
  'fields.user_id.max' = '1000000',
  'fields.amount.min' = '0',
  'fields.amount.max' = '1000',
  'fields.category.length' = '4'
);

CREATE TABLE filtered_events (
  event_id      BIGINT,
  user_id       INT,
  amount_cents  BIGINT,
  category      STRING
) WITH (
  'connector' = 'blackhole'
);

INSERT INTO filtered_events
SELECT event_id, user_id, CAST(amount * 100 AS BIGINT) AS amount_cents, UPPER(category) AS category
FROM events
WHERE amount >= 250 AND user_id % 4 <> 0;
