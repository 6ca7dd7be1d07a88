-- MySQL / MariaDB serving tables for sql/double_write.sql: the seed's four layers, keyed as its
-- StarRocks tables are, written by the jdbc connector.
CREATE DATABASE IF NOT EXISTS flink_cdc_serving;
CREATE TABLE IF NOT EXISTS flink_cdc_serving.orders (
   order_id INT NOT NULL,
   order_revenue FLOAT NOT NULL,
   order_region VARCHAR(40) NOT NULL,
   customer_id INT NOT NULL,
   PRIMARY KEY (order_id)
);
CREATE TABLE IF NOT EXISTS flink_cdc_serving.customers (
   customer_id INT NOT NULL,
   customer_age FLOAT NOT NULL,
   customer_name VARCHAR(40) NOT NULL,
   PRIMARY KEY (customer_id)
);
CREATE TABLE IF NOT EXISTS flink_cdc_serving.dwd_order_customer_valid (
   order_id INT NOT NULL,
   order_revenue FLOAT NOT NULL,
   order_region VARCHAR(40) NOT NULL,
   customer_id INT NOT NULL,
   customer_age FLOAT NOT NULL,
   customer_name VARCHAR(40) NOT NULL,
   PRIMARY KEY (order_id)
);
CREATE TABLE IF NOT EXISTS flink_cdc_serving.dws_agg_by_region (
   order_region VARCHAR(40) NOT NULL,
   order_cnt BIGINT NOT NULL,
   order_total_revenue FLOAT NOT NULL,
   PRIMARY KEY (order_region)
);
