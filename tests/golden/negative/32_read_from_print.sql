CREATE TABLE snk (id INT, name STRING, amount DOUBLE) WITH ('connector' = 'print');
SELECT * FROM snk;
