-- A self-contained example: 20 generated orders, totals per region printed as a changelog.
--   rsql-client -f sql/datagen_to_print.sql
CREATE TABLE orders (
  order_id INT,
  region_id INT,
  revenue DOUBLE
) WITH (
  'connector' = 'datagen',
  'number-of-rows' = '20',
  'fields.order_id.kind' = 'sequence',
  'fields.order_id.start' = '1',
  'fields.order_id.end' = '20',
  'fields.region_id.min' = '1',
  'fields.region_id.max' = '3',
  'fields.revenue.min' = '1',
  'fields.revenue.max' = '100'
);

CREATE TABLE totals (
  region_id INT,
  orders BIGINT,
  revenue DOUBLE,
  PRIMARY KEY (region_id) NOT ENFORCED
) WITH ('connector' = 'print', 'print-identifier' = 'totals');

INSERT INTO totals
SELECT region_id, COUNT(*), SUM(revenue) FROM orders GROUP BY region_id;
