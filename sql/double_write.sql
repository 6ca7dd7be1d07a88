-- The seed's layered warehouse with double-writing: every layer goes to its upsert-kafka topic
-- (for the next layer and for StarRocks Routine Load) and is also sunk straight into its
-- StarRocks table (the 'starrocks' connector, Stream Load) and into a MySQL serving table (the
-- 'jdbc' connector). Drop the sinks you do not need: the seed's double-writing is the starrocks
-- one. Hosts, ports and credentials are placeholders that default to the local services.
CREATE DATABASE IF NOT EXISTS `default_catalog`.`flink_cdc`;

CREATE TABLE IF NOT EXISTS `default_catalog`.`flink_cdc`.`orders_src`(
  `order_id` INT NOT NULL,
  `order_revenue` FLOAT NOT NULL,
  `order_region` STRING NOT NULL,
  `customer_id` INT NOT NULL,
  PRIMARY KEY(`order_id`) NOT ENFORCED
) with (
  'connector' = 'mysql-cdc',
  'hostname' = '${MYSQL_HOST:-127.0.0.1}',
  'port' = '${MYSQL_PORT:-13306}',
  'username' = '${MYSQL_USER:-rsql}',
  'password' = '${MYSQL_PASSWORD:-rsql}',
  'database-name' = '${MYSQL_DATABASE:-flink_cdc}',
  'table-name' = 'orders'
);

CREATE TABLE IF NOT EXISTS `default_catalog`.`flink_cdc`.`customers_src` (
  `customer_id` INT NOT NULL,
  `customer_age` FLOAT NOT NULL,
  `customer_name` STRING NOT NULL,
  PRIMARY KEY(`customer_id`) NOT ENFORCED
) with (
  'connector' = 'mysql-cdc',
  'hostname' = '${MYSQL_HOST:-127.0.0.1}',
  'port' = '${MYSQL_PORT:-13306}',
  'username' = '${MYSQL_USER:-rsql}',
  'password' = '${MYSQL_PASSWORD:-rsql}',
  'database-name' = '${MYSQL_DATABASE:-flink_cdc}',
  'table-name' = 'customers'
);

-- The seed's topics, as in demo.sql.
CREATE TABLE IF NOT EXISTS `default_catalog`.`flink_cdc`.`ods_order_table` (
  `order_id` INT,
  `order_revenue` FLOAT,
  `order_region` VARCHAR(40),
  `customer_id` INT,
  PRIMARY KEY (order_id) NOT ENFORCED
) WITH (
  'connector' = 'upsert-kafka',
  'topic' = 'ods_order',
  'properties.bootstrap.servers' = '${KAFKA_BOOTSTRAP:-127.0.0.1:19092}',
  'key.format' = 'json',
  'value.format' = 'json'
);

CREATE TABLE IF NOT EXISTS `default_catalog`.`flink_cdc`.`ods_customers_table` (
  `customer_id` INT,
  `customer_age` FLOAT,
  `customer_name` STRING,
  PRIMARY KEY (customer_id) NOT ENFORCED
) WITH (
  'connector' = 'upsert-kafka',
  'topic' = 'ods_customers',
  'properties.bootstrap.servers' = '${KAFKA_BOOTSTRAP:-127.0.0.1:19092}',
  'key.format' = 'json',
  'value.format' = 'json'
);

CREATE TABLE IF NOT EXISTS `default_catalog`.`flink_cdc`.`dwd_order_customer_valid` (
  `order_id` INT,
  `order_revenue` FLOAT,
  `order_region` STRING,
  `customer_id` INT,
  `customer_age` FLOAT,
  `customer_name` STRING,
  PRIMARY KEY (order_id) NOT ENFORCED
) WITH (
  'connector' = 'upsert-kafka',
  'topic' = 'dwd_order_customer_valid',
  'properties.bootstrap.servers' = '${KAFKA_BOOTSTRAP:-127.0.0.1:19092}',
  'key.format' = 'json',
  'value.format' = 'json'
);

CREATE TABLE IF NOT EXISTS `default_catalog`.`flink_cdc`.`dws_agg_by_region` (
  `order_region` VARCHAR(40),
  `order_cnt` BIGINT,
  `order_total_revenue` FLOAT,
  PRIMARY KEY (order_region) NOT ENFORCED
) WITH (
  'connector' = 'upsert-kafka',
  'topic' = 'dws_agg_by_region',
  'properties.bootstrap.servers' = '${KAFKA_BOOTSTRAP:-127.0.0.1:19092}',
  'key.format' = 'json',
  'value.format' = 'json'
);

-- StarRocks: the seed's four primary key tables (Step 3), loaded with Stream Load. Upserts and
-- deletes travel in the __op column; a buffer is loaded at least every second.
CREATE TABLE IF NOT EXISTS `default_catalog`.`flink_cdc`.`sr_orders` (
  `order_id` INT,
  `order_revenue` FLOAT,
  `order_region` STRING,
  `customer_id` INT,
  PRIMARY KEY (order_id) NOT ENFORCED
) WITH (
  'connector' = 'starrocks',
  'jdbc-url' = 'jdbc:mysql://${STARROCKS_FE_HOST:-127.0.0.1}:${STARROCKS_QUERY_PORT:-9030}',
  'load-url' = '${STARROCKS_LOAD_URL:-127.0.0.1:8030}',
  'database-name' = '${STARROCKS_DATABASE:-flink_cdc}',
  'table-name' = 'orders',
  'username' = '${STARROCKS_USER:-root}',
  'password' = '${STARROCKS_PASSWORD:-}',
  'sink.properties.format' = 'json',
  'sink.buffer-flush.interval-ms' = '1000',
  'sink.max-retries' = '${STARROCKS_MAX_RETRIES:-3}',
  'sink.retry.interval-ms' = '${STARROCKS_RETRY_INTERVAL_MS:-10000}'
);

CREATE TABLE IF NOT EXISTS `default_catalog`.`flink_cdc`.`sr_customers` (
  `customer_id` INT,
  `customer_age` FLOAT,
  `customer_name` STRING,
  PRIMARY KEY (customer_id) NOT ENFORCED
) WITH (
  'connector' = 'starrocks',
  'jdbc-url' = 'jdbc:mysql://${STARROCKS_FE_HOST:-127.0.0.1}:${STARROCKS_QUERY_PORT:-9030}',
  'load-url' = '${STARROCKS_LOAD_URL:-127.0.0.1:8030}',
  'database-name' = '${STARROCKS_DATABASE:-flink_cdc}',
  'table-name' = 'customers',
  'username' = '${STARROCKS_USER:-root}',
  'password' = '${STARROCKS_PASSWORD:-}',
  'sink.buffer-flush.interval-ms' = '1000',
  'sink.max-retries' = '${STARROCKS_MAX_RETRIES:-3}',
  'sink.retry.interval-ms' = '${STARROCKS_RETRY_INTERVAL_MS:-10000}'
);

CREATE TABLE IF NOT EXISTS `default_catalog`.`flink_cdc`.`sr_dwd_order_customer_valid` (
  `order_id` INT,
  `order_revenue` FLOAT,
  `order_region` STRING,
  `customer_id` INT,
  `customer_age` FLOAT,
  `customer_name` STRING,
  PRIMARY KEY (order_id) NOT ENFORCED
) WITH (
  'connector' = 'starrocks',
  'jdbc-url' = 'jdbc:mysql://${STARROCKS_FE_HOST:-127.0.0.1}:${STARROCKS_QUERY_PORT:-9030}',
  'load-url' = '${STARROCKS_LOAD_URL:-127.0.0.1:8030}',
  'database-name' = '${STARROCKS_DATABASE:-flink_cdc}',
  'table-name' = 'dwd_order_customer_valid',
  'username' = '${STARROCKS_USER:-root}',
  'password' = '${STARROCKS_PASSWORD:-}',
  'sink.properties.format' = 'json',
  'sink.buffer-flush.interval-ms' = '1000',
  'sink.max-retries' = '${STARROCKS_MAX_RETRIES:-3}',
  'sink.retry.interval-ms' = '${STARROCKS_RETRY_INTERVAL_MS:-10000}'
);

CREATE TABLE IF NOT EXISTS `default_catalog`.`flink_cdc`.`sr_dws_agg_by_region` (
  `order_region` VARCHAR(40),
  `order_cnt` BIGINT,
  `order_total_revenue` FLOAT,
  PRIMARY KEY (order_region) NOT ENFORCED
) WITH (
  'connector' = 'starrocks',
  'jdbc-url' = 'jdbc:mysql://${STARROCKS_FE_HOST:-127.0.0.1}:${STARROCKS_QUERY_PORT:-9030}',
  'load-url' = '${STARROCKS_LOAD_URL:-127.0.0.1:8030}',
  'database-name' = '${STARROCKS_DATABASE:-flink_cdc}',
  'table-name' = 'dws_agg_by_region',
  'username' = '${STARROCKS_USER:-root}',
  'password' = '${STARROCKS_PASSWORD:-}',
  'sink.properties.format' = 'json',
  'sink.buffer-flush.interval-ms' = '1000',
  'sink.max-retries' = '${STARROCKS_MAX_RETRIES:-3}',
  'sink.retry.interval-ms' = '${STARROCKS_RETRY_INTERVAL_MS:-10000}'
);

-- MySQL serving tables (sql/mysql/serving_tables.sql), upserted by primary key.
CREATE TABLE IF NOT EXISTS `default_catalog`.`flink_cdc`.`mysql_orders` (
  `order_id` INT,
  `order_revenue` FLOAT,
  `order_region` STRING,
  `customer_id` INT,
  PRIMARY KEY (order_id) NOT ENFORCED
) WITH (
  'connector' = 'jdbc',
  'url' = 'jdbc:mysql://${SERVING_HOST:-127.0.0.1}:${SERVING_PORT:-13306}/${SERVING_DATABASE:-flink_cdc_serving}',
  'table-name' = 'orders',
  'username' = '${SERVING_USER:-rsql}',
  'password' = '${SERVING_PASSWORD:-rsql}'
);

CREATE TABLE IF NOT EXISTS `default_catalog`.`flink_cdc`.`mysql_customers` (
  `customer_id` INT,
  `customer_age` FLOAT,
  `customer_name` STRING,
  PRIMARY KEY (customer_id) NOT ENFORCED
) WITH (
  'connector' = 'jdbc',
  'url' = 'jdbc:mysql://${SERVING_HOST:-127.0.0.1}:${SERVING_PORT:-13306}/${SERVING_DATABASE:-flink_cdc_serving}',
  'table-name' = 'customers',
  'username' = '${SERVING_USER:-rsql}',
  'password' = '${SERVING_PASSWORD:-rsql}'
);

CREATE TABLE IF NOT EXISTS `default_catalog`.`flink_cdc`.`mysql_dwd_order_customer_valid` (
  `order_id` INT,
  `order_revenue` FLOAT,
  `order_region` STRING,
  `customer_id` INT,
  `customer_age` FLOAT,
  `customer_name` STRING,
  PRIMARY KEY (order_id) NOT ENFORCED
) WITH (
  'connector' = 'jdbc',
  'url' = 'jdbc:mysql://${SERVING_HOST:-127.0.0.1}:${SERVING_PORT:-13306}/${SERVING_DATABASE:-flink_cdc_serving}',
  'table-name' = 'dwd_order_customer_valid',
  'username' = '${SERVING_USER:-rsql}',
  'password' = '${SERVING_PASSWORD:-rsql}'
);

CREATE TABLE IF NOT EXISTS `default_catalog`.`flink_cdc`.`mysql_dws_agg_by_region` (
  `order_region` VARCHAR(40),
  `order_cnt` BIGINT,
  `order_total_revenue` FLOAT,
  PRIMARY KEY (order_region) NOT ENFORCED
) WITH (
  'connector' = 'jdbc',
  'url' = 'jdbc:mysql://${SERVING_HOST:-127.0.0.1}:${SERVING_PORT:-13306}/${SERVING_DATABASE:-flink_cdc_serving}',
  'table-name' = 'dws_agg_by_region',
  'username' = '${SERVING_USER:-rsql}',
  'password' = '${SERVING_PASSWORD:-rsql}'
);

USE flink_cdc;

-- The DWD join and the DWS aggregate, each planned once and fanned out to three sinks
-- (table.optimizer.reuse-sub-plan-enabled, on by default).
CREATE TEMPORARY VIEW dwd_view AS
SELECT
  o.order_id,
  o.order_revenue,
  o.order_region,
  c.customer_id,
  c.customer_age,
  c.customer_name
FROM customers_src c JOIN orders_src o ON c.customer_id=o.customer_id
WHERE c.customer_id <> -1;

CREATE TEMPORARY VIEW dws_view AS
SELECT
  order_region,
  count(*) as order_cnt,
  sum(order_revenue) as order_total_revenue
FROM dwd_order_customer_valid
GROUP BY order_region;

BEGIN STATEMENT SET;

-- ODS layer
INSERT INTO ods_order_table SELECT * FROM orders_src;
INSERT INTO sr_orders SELECT * FROM orders_src;
INSERT INTO mysql_orders SELECT * FROM orders_src;
INSERT INTO ods_customers_table SELECT * FROM customers_src;
INSERT INTO sr_customers SELECT * FROM customers_src;
INSERT INTO mysql_customers SELECT * FROM customers_src;

-- DWD layer
INSERT INTO dwd_order_customer_valid SELECT * FROM dwd_view;
INSERT INTO sr_dwd_order_customer_valid SELECT * FROM dwd_view;
INSERT INTO mysql_dwd_order_customer_valid SELECT * FROM dwd_view;

-- DWS layer (from the DWD topic, as in the seed)
INSERT INTO dws_agg_by_region SELECT * FROM dws_view;
INSERT INTO sr_dws_agg_by_region SELECT * FROM dws_view;
INSERT INTO mysql_dws_agg_by_region SELECT * FROM dws_view;

END;
