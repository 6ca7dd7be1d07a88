CREATE TABLE orders_pg (id INT, region STRING, PRIMARY KEY (id) NOT ENFORCED) WITH (
  'connector' = 'jdbc',
  'url' = 'jdbc:postgresql://127.0.0.1:5432/shop',
  'table-name' = 'orders'
);
