CREATE TABLE orders (oid INT, cid INT, proc_time AS PROCTIME()) WITH ('connector' = 'datagen');
CREATE TABLE dim (id INT, name STRING, PRIMARY KEY (id) NOT ENFORCED) WITH ('connector' = 'datagen');
SELECT o.oid, c.name FROM orders AS o JOIN dim FOR SYSTEM_TIME AS OF o.proc_time AS c ON o.cid = c.id;
