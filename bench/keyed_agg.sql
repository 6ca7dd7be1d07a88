-- Keyed aggregate: datagen -> GROUP BY over 100K keys -> blackhole (an upsert sink keyed like
-- the aggregate, so the aggregate's changelog is +I / +U per changed key).
-- ${NAME:-default} placeholders are filled in by bench/run.sh and bench/run_flink.py.

CREATE TABLE events (
  user_id  INT,
  amount   DOUBLE
) WITH (
  'connector' = 'datagen',
  'rows-per-second' = '1000000000',
  'number-of-rows' = '${ROWS:-10000000}',
  'fields.user_id.min' = '1',
  'fields.user_id.max' = '${KEYS:-100000}',
  'fields.amount.min' = '0',
  'fields.amount.max' = '1000'
);

CREATE TABLE per_user (
  user_id      INT,
  event_count  BIGINT,
  total        DOUBLE,
  biggest      DOUBLE,
  PRIMARY KEY (user_id) NOT ENFORCED
) WITH (
  'connector' = 'blackhole'
);

INSERT INTO per_user
SELECT user_id, COUNT(*) AS event_count, SUM(amount) AS total, MAX(amount) AS biggest
FROM events
GROUP BY user_id;
