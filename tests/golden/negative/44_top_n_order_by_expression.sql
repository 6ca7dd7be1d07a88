CREATE TABLE src (id INT, cat STRING, amount DOUBLE, PRIMARY KEY (id) NOT ENFORCED) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
SELECT * FROM (SELECT id, cat, ROW_NUMBER() OVER (PARTITION BY cat ORDER BY amount * 2 DESC) AS rn FROM src) WHERE rn <= 3;
