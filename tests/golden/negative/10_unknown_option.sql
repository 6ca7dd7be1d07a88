CREATE TABLE t (a INT) WITH ('connector' = 'datagen', 'rows-per-secnd' = '5');
