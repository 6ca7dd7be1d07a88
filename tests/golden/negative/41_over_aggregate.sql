CREATE TABLE src (id INT, cat STRING, amount DOUBLE, PRIMARY KEY (id) NOT ENFORCED) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
SELECT id, SUM(amount) OVER (PARTITION BY cat ORDER BY id) AS running FROM src;
