-- The seed's Step 1: the source database and tables in MySQL / MariaDB.
CREATE DATABASE IF NOT EXISTS flink_cdc;
CREATE TABLE IF NOT EXISTS flink_cdc.orders (
   order_id INT NOT NULL AUTO_INCREMENT,
   order_revenue FLOAT NOT NULL,
   order_region VARCHAR(40) NOT NULL,
   customer_id INT NOT NULL,
   PRIMARY KEY ( order_id )
);
CREATE TABLE IF NOT EXISTS flink_cdc.customers (
   customer_id INT NOT NULL,
   customer_age INT NOT NULL,
   customer_name VARCHAR(40) NOT NULL,
   PRIMARY KEY ( customer_id )
);
