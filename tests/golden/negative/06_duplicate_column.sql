CREATE TABLE t (a INT, a STRING) WITH ('connector' = 'print');
