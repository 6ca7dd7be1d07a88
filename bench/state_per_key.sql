-- Aggregate state per key: datagen -> COUNT(*), SUM(INT), MAX(INT) GROUP BY one key -> blackhole.
-- bench/state_per_key.sh fills the ${NAME:-default} placeholders: the key count, the row count,
-- the generated column's type and the key expression (a BIGINT or a VARCHAR key is derived from
-- the generated INT).

CREATE TABLE events (
  user_id  INT,
  amount   INT
) WITH (
  'connector' = 'datagen',
  'rows-per-second' = '1000000000',
  'number-of-rows' = '${ROWS:-16000000}',
  'fields.user_id.min' = '1',
  'fields.user_id.max' = '${KEYS:-1000000}',
  'fields.amount.min' = '0',
  'fields.amount.max' = '1000'
);

CREATE TABLE per_user (
  user_id      ${KEY_TYPE:-INT},
  event_count  BIGINT,
  total        INT,
  biggest      INT,
  PRIMARY KEY (user_id) NOT ENFORCED
) WITH (
  'connector' = 'blackhole'
);

INSERT INTO per_user
SELECT user_id, COUNT(*) AS event_count, SUM(amount) AS total, MAX(amount) AS biggest
FROM (SELECT ${KEY_EXPR:-user_id} AS user_id, amount FROM events) AS e
GROUP BY user_id;
