CREATE TABLE sr_orders (id INT, region STRING, PRIMARY KEY (id) NOT ENFORCED) WITH (
  'connector' = 'starrocks',
  'jdbc-url' = 'jdbc:mysql://127.0.0.1:9030',
  'load-url' = '127.0.0.1:8030',
  'database-name' = 'flink_cdc',
  'table-name' = 'orders',
  'username' = 'root',
  'password' = '',
  'sink.semantic' = 'exactly-once',
  'sink.exactly-once.check-num-lingering-txn' = '-1'
);
