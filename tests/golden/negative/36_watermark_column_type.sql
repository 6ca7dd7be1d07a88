CREATE TABLE t (a INT, WATERMARK FOR a AS a - 1) WITH ('connector' = 'datagen');
