CREATE TABLE src (id INT, name STRING, amount DOUBLE, PRIMARY KEY (id) NOT ENFORCED) WITH ('connector' = 'datagen', 'number-of-rows' = '10');
CREATE TABLE out1 (name STRING, c BIGINT) WITH ('connector' = 'filesystem', 'path' = '/tmp/rsql-golden-out', 'format' = 'json');
INSERT INTO out1 SELECT name, count(*) FROM src GROUP BY name;
