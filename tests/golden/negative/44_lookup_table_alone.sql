CREATE TABLE customers (id INT, name STRING, PRIMARY KEY (id) NOT ENFORCED) WITH (
  'connector' = 'jdbc', 'url' = 'jdbc:mysql://127.0.0.1:3306/shop', 'table-name' = 'customers');
SELECT * FROM customers FOR SYSTEM_TIME AS OF TIMESTAMP '2024-01-01 00:00:00';
