CREATE TABLE src (id INT, name STRING) WITH ('connector' = 'datagen');
SELECT name, name FROM src;
