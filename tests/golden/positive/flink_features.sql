-- A tour of the Flink dialect that validates clean.
SET 'table.exec.state.ttl' = '1 h';
SET 'sql-client.execution.result-mode' = 'tableau';
CREATE CATALOG my_catalog WITH ('type' = 'generic_in_memory');
CREATE DATABASE IF NOT EXISTS my_catalog.db1 COMMENT 'a database';
USE CATALOG default_catalog;
CREATE TEMPORARY TABLE orders (
  order_id BIGINT NOT NULL COMMENT 'the key',
  price DECIMAL(10, 2),
  buyer ROW<name STRING, age INT>,
  tags ARRAY<STRING>,
  attrs MAP<STRING, BIGINT>,
  ts TIMESTAMP(3),
  ltz TIMESTAMP_LTZ(3),
  total AS price * 2,
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND,
  PRIMARY KEY (order_id) NOT ENFORCED
) COMMENT 'orders' WITH (
  'connector' = 'datagen',
  'rows-per-second' = '100'
);
CREATE TABLE orders_copy WITH ('number-of-rows' = '5') LIKE orders;
CREATE VIEW big_orders AS SELECT order_id, price FROM orders WHERE price > 10;
CREATE TABLE sink1 (order_id BIGINT, price DECIMAL(10, 2)) WITH ('connector' = 'blackhole');
CREATE TABLE sink2 (cnt BIGINT, mx DECIMAL(10, 2), PRIMARY KEY (cnt) NOT ENFORCED) WITH ('connector' = 'print', 'print-identifier' = 'x');
SHOW TABLES;
DESCRIBE orders;
SHOW CREATE TABLE orders;
EXPLAIN CHANGELOG_MODE SELECT order_id, price FROM big_orders;
EXECUTE STATEMENT SET BEGIN
INSERT INTO sink1 SELECT order_id, price FROM big_orders;
INSERT INTO sink2 SELECT count(*), max(price) FROM orders;
END;
INSERT INTO sink1 VALUES (1, 2.50), (2, 3);
DROP VIEW IF EXISTS big_orders;
DROP TABLE IF EXISTS orders_copy;
RESET 'table.exec.state.ttl';
RESET;
