-- Writable metadata in kafka sinks: 'timestamp' and 'headers' are written, VIRTUAL read-only
-- metadata stays out of the sink; several writers per sink.
CREATE TABLE src (id INT, name STRING) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
CREATE TABLE events (
  id INT,
  name STRING,
  ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp',
  off BIGINT METADATA FROM 'offset' VIRTUAL,
  hdrs MAP<STRING, BYTES> METADATA FROM 'headers'
) WITH ('connector' = 'kafka', 'topic' = 'events', 'properties.bootstrap.servers' = '127.0.0.1:19092', 'format' = 'json',
        'key.format' = 'json', 'key.fields' = 'id', 'sink.parallelism' = '3');
CREATE TABLE latest (
  id INT,
  name STRING,
  ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp',
  PRIMARY KEY (id) NOT ENFORCED
) WITH ('connector' = 'upsert-kafka', 'topic' = 'latest', 'properties.bootstrap.servers' = '127.0.0.1:19092',
        'key.format' = 'json', 'value.format' = 'json', 'sink.parallelism' = '2');
INSERT INTO events SELECT id, name, CAST(NULL AS TIMESTAMP(3)), MAP['source', X'6461746167656e'] FROM src;
INSERT INTO events (id, name) SELECT id, name FROM src;
INSERT INTO latest SELECT id, name, CAST(NULL AS TIMESTAMP(3)) FROM src;
