-- Reads the four layers of the seed pipeline back from their topics, up to now, and prints each
-- as a table (the view StarRocks' Routine Load builds from the same topics).
SET 'sql-client.execution.result-mode' = 'table';

CREATE TABLE ods_order (
  `order_id` INT, `order_revenue` FLOAT, `order_region` VARCHAR(40), `customer_id` INT,
  PRIMARY KEY (order_id) NOT ENFORCED
) WITH ('connector' = 'upsert-kafka', 'topic' = 'ods_order',
  'properties.bootstrap.servers' = '${KAFKA_BOOTSTRAP:-127.0.0.1:19092}',
  'key.format' = 'json', 'value.format' = 'json', 'scan.bounded.mode' = 'latest-offset');

CREATE TABLE ods_customers (
  `customer_id` INT, `customer_age` FLOAT, `customer_name` STRING,
  PRIMARY KEY (customer_id) NOT ENFORCED
) WITH ('connector' = 'upsert-kafka', 'topic' = 'ods_customers',
  'properties.bootstrap.servers' = '${KAFKA_BOOTSTRAP:-127.0.0.1:19092}',
  'key.format' = 'json', 'value.format' = 'json', 'scan.bounded.mode' = 'latest-offset');

CREATE TABLE dwd_order_customer_valid (
  `order_id` INT, `order_revenue` FLOAT, `order_region` STRING, `customer_id` INT,
  `customer_age` FLOAT, `customer_name` STRING,
  PRIMARY KEY (order_id) NOT ENFORCED
) WITH ('connector' = 'upsert-kafka', 'topic' = 'dwd_order_customer_valid',
  'properties.bootstrap.servers' = '${KAFKA_BOOTSTRAP:-127.0.0.1:19092}',
  'key.format' = 'json', 'value.format' = 'json', 'scan.bounded.mode' = 'latest-offset');

CREATE TABLE dws_agg_by_region (
  `order_region` VARCHAR(40), `order_cnt` BIGINT, `order_total_revenue` FLOAT,
  PRIMARY KEY (order_region) NOT ENFORCED
) WITH ('connector' = 'upsert-kafka', 'topic' = 'dws_agg_by_region',
  'properties.bootstrap.servers' = '${KAFKA_BOOTSTRAP:-127.0.0.1:19092}',
  'key.format' = 'json', 'value.format' = 'json', 'scan.bounded.mode' = 'latest-offset');

SELECT * FROM ods_order;
SELECT * FROM ods_customers;
SELECT * FROM dwd_order_customer_valid;
SELECT * FROM dws_agg_by_region;
