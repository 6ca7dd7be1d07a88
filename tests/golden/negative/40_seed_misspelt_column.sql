-- The seed's layered real-time warehouse: MySQL changes (mysql-cdc) -> ODS topics -> DWD (join)
-- -> DWS (aggregate), all layers in upsert-kafka topics. Hosts, ports and credentials are
-- placeholders that default to the local services started by scripts/quickstart.sh.
CREATE DATABASE IF NOT EXISTS `default_catalog`.`flink_cdc`;

-- Source tables: the mysql-cdc connector reads MySQL binlog events and
-- exposes them as a streaming table. Flink captures every INSERT, UPDATE,
-- and DELETE without polling.
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

-- Kafka sink tables: the upsert-kafka connector writes each row as a keyed
-- upsert message (key = primary key, value = full row). StarRocks Routine Load
-- consumes these messages and merges them into the target table.
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

USE flink_cdc;

BEGIN STATEMENT SET;

-- ODS layer: forward raw MySQL change events to Kafka topics
INSERT INTO ods_order_table SELECT * FROM orders_src;
INSERT INTO ods_customers_table SELECT * FROM customers_src;

-- DWD layer: join orders and customers, filter out invalid records
INSERT INTO dwd_order_customer_valid
SELECT
  o.order_id,
  o.order_revenue,
  o.order_regin,
  c.customer_id,
  c.customer_age,
  c.customer_name
FROM customers_src c JOIN orders_src o ON c.customer_id=o.customer_id
WHERE c.customer_id <> -1;

-- DWS layer: aggregate revenue and order count by region
INSERT INTO dws_agg_by_region
SELECT
  order_region,
  count(*) as order_cnt,
  sum(order_revenue) as order_total_revenue
FROM dwd_order_customer_valid
GROUP BY order_region;

END;
