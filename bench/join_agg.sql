-- Changelog join -> aggregate: orders and customers arrive as changelogs (each key is written
-- several times, so the views below emit updates: -U/+U pairs, as a CDC source would), are
-- joined on customer_id, and aggregated by region into an upsert sink.
-- The changelogs come from datagen through a GROUP BY ... LAST_VALUE view, which both Flink and
-- rsql run unchanged: a later row for the same key retracts the earlier one downstream.
-- ${NAME:-default} placeholders are filled in by bench/run.sh and bench/run_flink.py.

CREATE TABLE order_events (
  order_id     BIGINT,
  customer_id  INT,
  amount       DOUBLE
) WITH (
  'connector' = 'datagen',
  'rows-per-second' = '1000000000',
  'number-of-rows' = '${ROWS:-4000000}',
  'fields.order_id.min' = '1',
  'fields.order_id.max' = '${ORDER_KEYS:-1000000}',
  'fields.customer_id.min' = '1',
  'fields.customer_id.max' = '${CUSTOMER_KEYS:-100000}',
  'fields.amount.min' = '1',
  'fields.amount.max' = '500'
);

CREATE TABLE customer_events (
  customer_id  INT,
  region       STRING
) WITH (
  'connector' = 'datagen',
  'rows-per-second' = '1000000000',
  'number-of-rows' = '${CUSTOMER_ROWS:-200000}',
  'fields.customer_id.min' = '1',
  'fields.customer_id.max' = '${CUSTOMER_KEYS:-100000}',
  'fields.region.length' = '1'
);

CREATE VIEW orders AS
SELECT order_id, LAST_VALUE(customer_id) AS customer_id, LAST_VALUE(amount) AS amount
FROM order_events
GROUP BY order_id;

CREATE VIEW customers AS
SELECT customer_id, LAST_VALUE(region) AS region
FROM customer_events
GROUP BY customer_id;

CREATE TABLE revenue_by_region (
  region       STRING,
  order_count  BIGINT,
  revenue      DOUBLE,
  PRIMARY KEY (region) NOT ENFORCED
) WITH (
  'connector' = 'blackhole'
);

INSERT INTO revenue_by_region
SELECT c.region, COUNT(*) AS order_count, SUM(o.amount) AS revenue
FROM orders AS o
JOIN customers AS c ON o.customer_id = c.customer_id
GROUP BY c.region;
