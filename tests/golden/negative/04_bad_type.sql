CREATE TABLE t (a INTT) WITH ('connector' = 'print');
