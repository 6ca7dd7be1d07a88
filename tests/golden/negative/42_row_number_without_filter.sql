CREATE TABLE src (id INT, cat STRING, amount DOUBLE, PRIMARY KEY (id) NOT ENFORCED) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
SELECT id, ROW_NUMBER() OVER (PARTITION BY cat ORDER BY amount) AS rn FROM src;
