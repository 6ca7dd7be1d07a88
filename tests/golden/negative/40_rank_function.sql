CREATE TABLE src (id INT, cat STRING, amount DOUBLE, PRIMARY KEY (id) NOT ENFORCED) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
SELECT * FROM (SELECT id, cat, RANK() OVER (PARTITION BY cat ORDER BY amount DESC) AS rk FROM src) WHERE rk <= 3;
