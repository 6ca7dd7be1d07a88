-- Writes keyed upserts to a topic, then reads the topic back up to now as a table.
--   scripts/kafka.sh start && scripts/kafka.sh create-topic users
--   rsql-client -f sql/upsert_kafka_roundtrip.sql
SET 'table.dml-sync' = 'true';

CREATE TABLE users (
  id INT,
  name STRING,
  PRIMARY KEY (id) NOT ENFORCED
) WITH (
  'connector' = 'upsert-kafka',
  'topic' = 'users',
  'properties.bootstrap.servers' = '${KAFKA_BOOTSTRAP:-127.0.0.1:19092}',
  'key.format' = 'json',
  'value.format' = 'json',
  'scan.bounded.mode' = 'latest-offset'
);

INSERT INTO users VALUES (1, 'ada'), (2, 'grace'), (1, 'ada lovelace');

SET 'sql-client.execution.result-mode' = 'table';
SELECT * FROM users;
