CREATE TABLE src (id INT, name STRING, amount DOUBLE, PRIMARY KEY (id) NOT ENFORCED) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
CREATE TABLE snk (id INT, name STRING, amount DOUBLE) WITH ('connector' = 'print');
INSERT INTO snk SELECT id, name FROM src;
