CREATE TABLE snk (id INT, name STRING, PRIMARY KEY (id) NOT ENFORCED) WITH (
  'connector' = 'upsert-kafka', 'topic' = 't', 'properties.bootstrap.servers' = '127.0.0.1:19092',
  'key.format' = 'json', 'value.format' = 'json',
  'sink.parallelism' = '0'
);
