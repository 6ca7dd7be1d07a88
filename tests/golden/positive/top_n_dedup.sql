-- Top-N and deduplication (ROW_NUMBER() OVER ... filtered in an outer query), as Flink plans them.
CREATE TABLE orders (
  order_id BIGINT NOT NULL,
  region STRING,
  amount DOUBLE,
  ts TIMESTAMP(3),
  proc AS PROCTIME(),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH ('connector' = 'datagen', 'number-of-rows' = '100');
CREATE TABLE top3 (
  region STRING,
  order_id BIGINT,
  amount DOUBLE,
  rn BIGINT,
  PRIMARY KEY (region, rn) NOT ENFORCED
) WITH ('connector' = 'print');
CREATE TABLE latest (order_id BIGINT, region STRING, amount DOUBLE, PRIMARY KEY (order_id) NOT ENFORCED) WITH ('connector' = 'print');
-- The three largest orders per region, with their row number.
EXPLAIN CHANGELOG_MODE
SELECT * FROM (
  SELECT region, order_id, amount, ROW_NUMBER() OVER (PARTITION BY region ORDER BY amount DESC) AS rn FROM orders
) WHERE rn <= 3;
-- The same without the row number in the result, and as a range with an offset.
EXPLAIN SELECT region, order_id FROM (
  SELECT region, order_id, amount, ROW_NUMBER() OVER (PARTITION BY region ORDER BY amount DESC, order_id) AS rn FROM orders
) WHERE rn < 4;
EXPLAIN SELECT * FROM (
  SELECT order_id, amount, ROW_NUMBER() OVER (ORDER BY amount DESC) AS rn FROM orders
) WHERE rn BETWEEN 2 AND 5;
-- Deduplication: the first and the last row per key by processing time, the first by event time.
EXPLAIN CHANGELOG_MODE
SELECT order_id, region, amount FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY order_id ORDER BY proc ASC) AS rn FROM orders
) WHERE rn = 1;
EXPLAIN CHANGELOG_MODE
SELECT order_id, region, amount FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY order_id ORDER BY proc DESC) AS rn FROM orders
) WHERE rn = 1;
EXPLAIN SELECT order_id, region, amount FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY order_id ORDER BY ts) AS rn FROM orders
) WHERE rn = 1;
-- Top-N of an aggregate (an updating input: the retract strategy).
EXPLAIN CHANGELOG_MODE
SELECT * FROM (
  SELECT region, total, ROW_NUMBER() OVER (ORDER BY total DESC) AS rn
  FROM (SELECT region, SUM(amount) AS total FROM orders GROUP BY region)
) WHERE rn <= 2;
EXECUTE STATEMENT SET BEGIN
INSERT INTO top3
SELECT region, order_id, amount, rn FROM (
  SELECT region, order_id, amount, ROW_NUMBER() OVER (PARTITION BY region ORDER BY amount DESC) AS rn FROM orders
) WHERE rn <= 3;
INSERT INTO latest
SELECT order_id, region, amount FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY order_id ORDER BY proc DESC) AS rn FROM orders
) WHERE rn = 1;
END;
