CREATE TABLE src (id INT, name STRING, amount DOUBLE, PRIMARY KEY (id) NOT ENFORCED) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
SELECT frobnicate(id) FROM src;
